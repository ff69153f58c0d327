"""Project-wide test settings."""

from hypothesis import HealthCheck, settings

# The machines are shared and noisy: a per-example deadline measures the neighbours, not the code.
settings.register_profile("tiergate", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tiergate")
