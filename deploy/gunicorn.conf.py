"""The one server configuration of every paxmart web process.

The launcher (infra/launcher.py), docker-compose.yml and the image (infra/Dockerfile) all
run `gunicorn -c deploy/gunicorn.conf.py --bind <address> paxkit.web:serve('<component>')`;
only the address differs. tests/unit/test_compose.py holds them to that.
"""

import os

# One worker process of many threads per web process; the gateway admits at most
# workers * threads requests at once. Scale a component by running more web processes
# (more replicas): on two cores a second worker per process bought no measurable
# throughput and cost about 65 MiB each (make bench, README "Measuring performance").
workers = int(os.environ.get("PAXMART_WEB_WORKERS", "1"))
threads = int(os.environ.get("PAXMART_WEB_THREADS", "32"))
# gthread, whose own rejections (bad request line, URI too long, headers) answer in the
# contract's JSON error shape.
worker_class = "paxkit.server.ContractWorker"
timeout = 30
graceful_timeout = 5
# The inter-component clients (paxkit/http.py) pool connections with no idle limit of their
# own: with a short server keep-alive, a request sent just as the server closes its idle
# connection fails (a POST is not retried). A long one makes that race rare.
keepalive = 75
# A listening socket per worker: the kernel spreads connections evenly between them.
reuse_port = True
# Several stacks run on one machine: no shared per-user control socket (gunicorn >= 25.1).
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


def on_starting(server):
    """Every worker writes its metrics under PROMETHEUS_MULTIPROC_DIR; /metrics adds them up."""
    from paxkit.multiproc import prepare_multiprocess_dir

    prepare_multiprocess_dir()


def post_worker_init(worker):
    """The work each web process runs beside serving (e.g. the gateway's notices)."""
    from paxkit.web import start_process_work

    start_process_work(worker.wsgi)


def worker_exit(server, worker):
    from paxkit.web import stop_process_work

    if worker.wsgi is not None:
        stop_process_work(worker.wsgi)


def child_exit(server, worker):
    """A dead worker's live gauges no longer count."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
