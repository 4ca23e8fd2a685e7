# A gunicorn config file with gunicorn_tornadofork turned on.
#
#     gunicorn --config examples/tornadofork.py --chdir examples app:wsgi
#
# Every worker gets a task id 0 .. workers-1 that its replacement inherits; after more
# than max_restarts restarts the server gives up (exit status 5); a worker that finishes
# its task is not replaced, and the server exits 0 once every task has finished.
import gunicorn_tornadofork

bind = "127.0.0.1:8000"
workers = 4  # 0: one worker per CPU this process may run on


def on_starting(server):
    gunicorn_tornadofork.install(server, max_restarts=100)


def post_fork(server, worker):
    # worker.task_id is set in every hook that receives a worker, and task_id() works
    # anywhere in the worker process, as GUNICORN_TASK_ID does in its environment.
    server.log.info("worker %s holds task %s", worker.pid, worker.task_id)
