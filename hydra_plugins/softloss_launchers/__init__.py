"""softloss's Hydra launcher plugins (Hydra finds launchers in the ``hydra_plugins`` namespace).

``IsolatedJoblibLauncher``: the joblib launcher of ``hydra-joblib-launcher`` whose jobs each run
in a child process of their worker, so that a job that dies takes only itself
(``softloss_cli/runs/launchers.py``). ``configs/hydra/launcher/joblib.yaml`` selects it. Without
the joblib extra installed there is nothing here (Hydra's plugin scan imports this package).
"""

try:
    from hydra_plugins.softloss_launchers.isolated_joblib import IsolatedJoblibLauncher
except ImportError:  # hydra-joblib-launcher not installed: no such launcher
    __all__: list[str] = []
else:
    __all__ = ["IsolatedJoblibLauncher"]
