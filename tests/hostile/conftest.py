"""The hostile tests run against the same fakes-based app as tests/api."""

from tests.api.conftest import served, settings_overrides

__all__ = ["served", "settings_overrides"]
