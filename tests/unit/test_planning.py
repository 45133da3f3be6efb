"""plan_up and plan_down, pure: migrations and statuses built in memory, no database, no files
(except a down file where rolling back needs one)."""

import datetime as dt
import hashlib
from pathlib import Path

import pytest

import pgfast

WHEN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def migration(
    version: int, *, depends_on: tuple[int, ...] = (), down: bool = True, sql: str = "SELECT 1;"
) -> pgfast.Migration:
    folder = Path("/nowhere/migrations")
    down_path = folder / f"{version}_m{version}_down.sql" if down else None
    return pgfast.Migration(
        version,
        f"m{version}",
        folder / f"{version}_m{version}_up.sql",
        down_path,
        sql,
        f"sum{version}",
        depends_on,
    )


def sha256(sql: str) -> str:  # the progress checksum pgfast records for a file without CR
    return hashlib.sha256(sql.encode()).hexdigest()


def applied(m: pgfast.Migration, order: int) -> pgfast.MigrationStatus:
    return pgfast.MigrationStatus(m.version, m.name, "applied", WHEN, m, apply_order=order)


def pending(m: pgfast.Migration) -> pgfast.MigrationStatus:
    return pgfast.MigrationStatus(m.version, m.name, "pending", None, m)


def versions(plan: list[pgfast.Migration]) -> list[int]:
    return [m.version for m in plan]


def test_plan_up_orders_by_dependency_then_version() -> None:
    ms = [migration(1, depends_on=(3,)), migration(2), migration(3)]
    assert versions(pgfast.plan_up(ms, [pending(m) for m in ms])) == [2, 3, 1]


def test_plan_up_target_pulls_in_its_dependencies_even_with_higher_versions() -> None:
    ms = [migration(1), migration(2, depends_on=(5,)), migration(3), migration(5)]
    statuses = [applied(ms[0], 1)] + [pending(m) for m in ms[1:]]
    assert versions(pgfast.plan_up(ms, statuses, target=2)) == [5, 2]


def test_plan_up_unknown_target_names_the_parameter_and_the_version() -> None:
    ms = [migration(1)]
    with pytest.raises(
        pgfast.UnknownVersionError, match=r"^target=7: no migration has that version; "
    ) as info:
        pgfast.plan_up(ms, [pending(ms[0])], target=7)
    assert info.value.version == 7
    assert isinstance(info.value, LookupError)


def test_plan_up_refuses_changed_and_missing_files_unless_forced() -> None:
    ms = [migration(1), migration(2)]
    modified = pgfast.MigrationStatus(1, "m1", "modified", WHEN, ms[0], apply_order=1)
    missing = pgfast.MigrationStatus(9, "gone", "missing", WHEN, None, apply_order=2)
    statuses = [modified, pending(ms[1]), missing]
    with pytest.raises(pgfast.ChecksumError, match=r"changed after it was applied.*pass force=True") as info:
        pgfast.plan_up(ms, statuses)
    assert [p.version for p in info.value.problems] == [1, 9]
    assert "--force" not in str(info.value)
    assert versions(pgfast.plan_up(ms, statuses, force=True)) == [2]


def test_plan_up_refuses_a_partial_migration_unless_resumed() -> None:
    ms = [migration(1, sql="SELECT 1; SELECT 2;"), migration(2)]
    partial = pgfast.MigrationStatus(
        1, "m1", "partial", None, ms[0], 1, 2, "up", progress_checksum=sha256(ms[0].sql)
    )
    with pytest.raises(
        pgfast.PartialMigrationError, match=r"apply_migrations\(\.\.\., resume=True\)"
    ) as info:
        pgfast.plan_up(ms, [partial, pending(ms[1])])
    assert info.value.partial is partial
    assert versions(pgfast.plan_up(ms, [partial, pending(ms[1])], resume=True)) == [1, 2]


def test_plan_up_will_not_resume_a_file_changed_since_it_stopped() -> None:
    ms = [migration(1, sql="SELECT 1; SELECT 2;")]
    partial = pgfast.MigrationStatus(1, "m1", "partial", None, ms[0], 1, 2, "up", progress_checksum="other")
    with pytest.raises(pgfast.PartialMigrationError, match=r"changed since it stopped part way"):
        pgfast.plan_up(ms, [partial], resume=True)


def test_plan_down_rolls_back_by_apply_order_not_version() -> None:
    ms = [migration(1), migration(2), migration(3)]
    statuses = [applied(ms[0], 1), applied(ms[1], 3), applied(ms[2], 2)]
    assert versions(pgfast.plan_down(ms, statuses)) == [2]
    assert versions(pgfast.plan_down(ms, statuses, steps=2)) == [2, 3]
    assert versions(pgfast.plan_down(ms, statuses, target=1)) == [2, 3]
    assert versions(pgfast.plan_down(ms, statuses, target=0)) == [2, 3, 1]


def test_plan_down_target_must_be_applied() -> None:
    ms = [migration(1), migration(2)]
    with pytest.raises(pgfast.UnknownVersionError, match=r"^target=2: that migration is not applied; "):
        pgfast.plan_down(ms, [applied(ms[0], 1), pending(ms[1])], target=2)


def test_plan_down_steps_and_target_are_checked_in_the_apis_words() -> None:
    ms = [migration(1)]
    with pytest.raises(pgfast.ConfigError, match=r"give either steps= or target=, not both") as info:
        pgfast.plan_down(ms, [applied(ms[0], 1)], steps=1, target=0)
    assert info.value.setting == "steps"
    with pytest.raises(pgfast.ConfigError, match=r"steps=0: roll back at least 1 migration"):
        pgfast.plan_down(ms, [applied(ms[0], 1)], steps=0)


def test_plan_down_refuses_to_strand_an_applied_dependent() -> None:
    ms = [migration(1), migration(2, depends_on=(1,)), migration(3)]
    # 1 was applied last (after a repair, say): rolling it back alone would strand 2.
    statuses = [applied(ms[0], 3), applied(ms[1], 1), applied(ms[2], 2)]
    with pytest.raises(
        pgfast.DependencyError,
        match=r"cannot roll back 1_m1: applied migration 2_m2 depends on it; roll that back too "
        r"\(larger steps=N or lower target=VERSION\)$",
    ) as info:
        pgfast.plan_down(ms, statuses)
    assert (info.value.migration, info.value.version) == ("2_m2", 1)


def test_plan_down_needs_every_file_and_down_file() -> None:
    ms = [migration(1, down=False)]
    with pytest.raises(
        pgfast.MigrationFileError, match=r"no down file for .*1_m1_up.sql; write the _down.sql"
    ):
        pgfast.plan_down(ms, [applied(ms[0], 1)])
    gone = pgfast.MigrationStatus(5, "old", "missing", WHEN, None, apply_order=2)
    with pytest.raises(pgfast.MigrationFileError, match=r"cannot roll back 5_old: applied, but .* gone"):
        pgfast.plan_down(ms, [applied(ms[0], 1), gone])


def test_plan_down_resumes_only_a_rollback_that_starts_with_the_partial_one(tmp_path: Path) -> None:
    down = tmp_path / "1_m1_down.sql"
    down.write_text("SELECT 1; SELECT 2;")
    m1 = pgfast.Migration(1, "m1", tmp_path / "1_m1_up.sql", down, "SELECT 1;", "sum1")
    m2 = migration(2)
    checksum = sha256(down.read_text())

    def partial(order: int) -> pgfast.MigrationStatus:
        return pgfast.MigrationStatus(
            1, "m1", "partial", WHEN, m1, 1, 2, "down", apply_order=order, progress_checksum=checksum
        )

    with pytest.raises(pgfast.PartialMigrationError, match=r"this rollback does not start with it"):
        pgfast.plan_down([m1, m2], [partial(1), applied(m2, 2)], resume=True)
    assert versions(pgfast.plan_down([m1, m2], [partial(2), applied(m2, 1)], resume=True)) == [1]
    with pytest.raises(pgfast.PartialMigrationError, match=r"rollback_migrations\(\.\.\., resume=True\)"):
        pgfast.plan_down([m1, m2], [partial(2), applied(m2, 1)])


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["schema", "up", "--target", str(2**63)],
            "is not a positive whole number up to 9223372036854775807",
        ),
        (["schema", "down", "--steps", "x"], "'x' is not a positive whole number"),
        (["test-db", "server", "--port", "0"], "'0' is not a positive whole number"),
    ],
)
def test_versions_and_counts_have_their_own_parsers(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        pgfast.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
