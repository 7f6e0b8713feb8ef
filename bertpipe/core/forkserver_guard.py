"""Imported first by the stage forkserver (``bertpipe.core.workers``): ties its life to its parent's.

The forkserver cannot notice on its own that the stage's process died: every worker it forked
holds a copy of the pipe it watches for that. So a daemon thread here polls the parent pid and
exits the forkserver once it has been reparented; its workers, which asked the kernel for
SIGKILL when the forkserver exits, follow. Polling rather than ``PR_SET_PDEATHSIG`` because the
kernel ties that to the parent *thread*, and a stage may start the forkserver from a worker
thread that ends long before the process does. Importing this module elsewhere would do the
same to that process: don't.

The parent to follow comes from ``BERTPIPE_FORKSERVER_PARENT``, which the stage's process sets
to its own pid before it starts the forkserver (``bertpipe.core.workers.process_pool``): a
parent killed while the forkserver is still starting (seconds on a loaded machine) would
otherwise already be gone when this runs, leaving ``getppid()`` to name init, which never dies.
"""

import os
import threading
import time

_PARENT = int(os.environ.get("BERTPIPE_FORKSERVER_PARENT") or os.getppid())


def _watch() -> None:
    while os.getppid() == _PARENT:
        time.sleep(0.5)
    os._exit(1)


threading.Thread(target=_watch, name="bertpipe-forkserver-guard", daemon=True).start()
