# gunicorn config for one pod of a Kubernetes StatefulSet (see kubernetes.yaml): task ids are
# unique across the whole set, pod k holding ids k*workers .. k*workers+workers-1.
import os

import gunicorn_tornadofork

bind = "0.0.0.0:8000"
workers = int(os.environ.get("WORKERS_PER_POD", "4"))
# Kubernetes >= 1.28 sets this label on StatefulSet pods; the manifest passes it down.
# Older clusters: the ordinal is the suffix of the pod name (web-0, web-1, ...).
ordinal = os.environ.get("POD_INDEX") or os.environ.get("POD_NAME", "pod-0").rsplit("-", 1)[1]


def on_starting(server):
    gunicorn_tornadofork.install(
        server,
        task_id_offset=int(ordinal) * workers,
        max_restarts=10,
        restart_window=60,  # more than 10 restarts in a minute: give up, let Kubernetes act
        backoff=0.5,
        backoff_max=30,
    )
