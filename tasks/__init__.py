"""seqio Task and Mixture registrations, installed as the package `vp_jax.tasks`.

`import vp_jax.tasks` registers everything here. This folder is mapped onto the `vp_jax.tasks`
package by setup.py (`package_dir`), so no top-level module named `tasks` is ever installed.
Users register their own tasks in their own module and load it with `--gin.train.task_modules=[...]`
(see README), without editing the library.
"""
from vp_jax.tasks import toy  # noqa: F401
