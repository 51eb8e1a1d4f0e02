"""``python -m toppipe.jupyter ARGS``: JupyterLab (``jupyterlab``'s own entry point) for a site.

The same server, options and shutdown as ``python -m jupyterlab``; only the
interpreter's teardown after it is skipped (:mod:`toppipe.quick_exit`), which
made up nearly all of the time the site's ``down`` waited for JupyterLab.
"""

from toppipe.quick_exit import run

if __name__ == "__main__":
    from jupyterlab.labapp import main

    run(main)
