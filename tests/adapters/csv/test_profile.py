"""Column profiles: the shipped ones load, a profile file by path loads, a bad profile is refused with the
reason."""
from __future__ import annotations

import pytest

from adapters.csv import Profile, ProfileError, available_profiles, load_profile


def test_profiles_load_and_bad_profiles_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert {"lis-generic-zh", "lis-detail-zh", "lis-generic-en"} <= set(available_profiles())
    for name in available_profiles():
        assert load_profile(name).name == name
    with pytest.raises(ProfileError, match="available: .*lis-generic-zh"):
        load_profile("no-such-profile")
    base = {"columns": {"resident_id": "身份证号", "report_id": "报告单号", "item_code": "项目代码", "result": "结果",
                        "reported_at": "报告时间"}, "default_status": "final"}
    assert Profile.from_dict(base, "x.yaml").columns["result"] == ("结果",)
    for change, words in [({"columns": {**base["columns"], "name": "姓名"}}, "unknown field 'name'"),
                          ({"ignore": ["结果"]}, "both mapped and ignored"),
                          ({"default_status": None}, r"status \(or default_status\)"),
                          ({"statuses": {"终审": "done"}}, "not one of"),
                          ({"encoding": "klingon"}, "unknown encoding"),
                          ({"delimitor": ","}, "unknown key")]:
        with pytest.raises(ProfileError, match=words):
            Profile.from_dict({**base, **change}, "x.yaml")
    custom = tmp_path / "mine.yaml"
    custom.write_text("columns: {resident_id: 证件, report_id: 单号, item_code: 代码, result: 值, reported_at: 时间}\n"
                      "default_status: final\n", "utf-8")
    assert load_profile(str(custom)).name == "mine"


def test_offset_less_times_are_beijing_time_unless_the_profile_names_another_zone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from codes.calendar import BEIJING

    assert load_profile("lis-generic-zh").zone is BEIJING
    base = {"columns": {"resident_id": "身份证号", "report_id": "报告单号", "item_code": "项目代码", "result": "结果",
                        "reported_at": "报告时间"}, "default_status": "final"}
    assert Profile.from_dict(base, "x.yaml").zone is BEIJING
    hong_kong = Profile.from_dict({**base, "timezone": "Asia/Hong_Kong"}, "x.yaml").zone
    assert isinstance(hong_kong, ZoneInfo)
    assert datetime(2025, 3, 1, tzinfo=hong_kong).utcoffset() == BEIJING.utcoffset(None)
    with pytest.raises(ProfileError, match="unknown time zone 'Mars/Olympus'"):
        Profile.from_dict({**base, "timezone": "Mars/Olympus"}, "x.yaml")
