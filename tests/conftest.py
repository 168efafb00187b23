"""Shared test settings.

Hypothesis runs derandomized in CI (CI=true), so a CI result can be reproduced;
locally it explores new examples every run.  No deadlines: the machine is shared.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")
