"""Queue mode's settings: the group configs it sets and what it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orderproc.config import GroupType, ProcessingGuarantee, Settings, WireFormat
from orderproc.errors import OrderProcError
from orderproc.kafka.share_groups import CRASH_HEADROOM, share_group_configs


@pytest.mark.parametrize(("attempts", "limit"), [(1, 3), (3, 5), (8, 10), (10, 10)])
def test_the_delivery_limit_leaves_room_for_crashed_members(attempts: int, limit: int) -> None:
    configs = share_group_configs(Settings(max_attempts=attempts))
    assert configs["share.delivery.count.limit"] == str(limit)
    assert limit >= attempts and (limit == 10 or limit == attempts + CRASH_HEADROOM)
    # Orders written before the group's first member, never a replay's aborted attempt.
    assert configs["share.auto.offset.reset"] == "earliest"
    assert configs["share.isolation.level"] == "read_committed"


def test_more_attempts_than_a_share_group_delivers_is_refused() -> None:
    with pytest.raises(OrderProcError, match="MAX_ATTEMPTS=11 is more deliveries"):
        share_group_configs(Settings(max_attempts=11))


def test_a_share_group_refuses_exactly_once_and_the_registry() -> None:
    share = GroupType.SHARE
    with pytest.raises(ValidationError, match="exactly once needs ORDERPROC_GROUP_TYPE"):
        Settings(group_type=share, processing_guarantee=ProcessingGuarantee.EXACTLY_ONCE)
    with pytest.raises(ValidationError, match="schemaless wire format only"):
        Settings(group_type=share, schema_registry_url="http://127.0.0.1:8081")
    with pytest.raises(ValidationError, match="schemaless wire format only"):
        Settings(group_type=share, schema_registry_url="http://r", wire_format=WireFormat.REGISTRY)
    # A registry URL with the schemaless format named is fine, as is the default group type.
    Settings(group_type=share, schema_registry_url="http://r", wire_format=WireFormat.SCHEMALESS)
    Settings(processing_guarantee=ProcessingGuarantee.EXACTLY_ONCE)
