"""The soak: a seeded random campaign of faults against a real gunicorn with the plugin,
checked against an independent model of the contract (``python benchmarks/soak.py``).

``plan`` draws the events from the seed, ``model`` is the contract (it imports nothing from
``gunicorn_tornadofork``), ``observe`` reads /proc and the logs, ``server`` and ``load`` run
gunicorn and its clients, ``runner`` ties them together; ``app`` and ``hooks`` run inside
the server.
"""
