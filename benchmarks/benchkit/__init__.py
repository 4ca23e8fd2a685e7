"""The benchmark of ``benchmarks/bench.py``, gunicorn with the plugin against plain gunicorn.

* :mod:`.runner`: one server in a session of its own, its readiness pipe, its cleanup;
* :mod:`.servers`: the config files (plugin, plain) and tornado's floor;
* :mod:`.proc`: what ``/proc`` tells of a process (CPU time, RSS, loop turns);
* :mod:`.loadgen`: ``wrk`` and the Python client, and the reading of their output;
* :mod:`.figures`: a figure's samples, medians, ratios and target;
* :mod:`.report`: the Markdown table, the JSON file, the machine;
* :mod:`.profiles`: how many repeats (``--quick`` or the full run);
* one module per measurement: :mod:`.boot`, :mod:`.respawn`, :mod:`.storm`,
  :mod:`.throughput`, :mod:`.rest`, :mod:`.reload`;
* :mod:`.cli`: the command line.
"""
