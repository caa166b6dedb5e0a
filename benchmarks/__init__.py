"""Code behind `trocar bench ...`."""
