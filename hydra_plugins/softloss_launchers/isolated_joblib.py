"""``IsolatedJoblibLauncher``: hydra-joblib-launcher's launcher, each job in its own process."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


class IsolatedJoblibLauncher(JoblibLauncher):
    """The joblib launcher (same config keys), whose jobs run through
    ``softloss_cli.runs.launchers.execute_job_isolated``: a job killed by a signal or the OOM
    killer is recorded ``killed`` and the sweep goes on."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from softloss_cli.runs.launchers import launch_isolated

        return launch_isolated(self, job_overrides, initial_job_idx)
