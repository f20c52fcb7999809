"""Under GPUINF_REQUIRE_TOOLS=1 the end-to-end tests fail, instead of skipping, without prometheus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.prometheus import fail_required_skip


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    report = yield
    fail_required_skip(report)
    return report
