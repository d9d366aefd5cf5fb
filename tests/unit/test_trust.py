"""Whom the client talks to (queuectl/trust.py): the path rule over every
owner, mode and sticky bit, and the Client sending nothing to a listener it
does not trust (the listener's uid is faked: another uid needs root, which the
end-to-end tests in tests/e2e/test_trust.py have)."""

from __future__ import annotations

import itertools
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queuectl import Client, DaemonUnreachable, QueuectlError, UntrustedDaemon, trust
from queuectl.trust import Entry, Lookup, own_directory_problem, path_problem, shared_daemon_problem
from queued import protocol as p

from .test_client import FakeDaemon, run_cli

ME, ROOT, DAEMON, STRANGER = 1000, 0, 990, 4242
DIR = stat.S_IFDIR
SLASH = Entry("/", ROOT, DIR | 0o755)


def d(path: str, uid: int, mode: int) -> Entry:
    return Entry(path, uid, DIR | mode)


def lookups(*chain: Entry) -> list[Lookup]:
    """The lookups from `/` down to a socket in chain[0], whose parents follow it."""
    steps = [Lookup(chain[0], Entry(chain[0].path + "/queued.sock", chain[0].uid, stat.S_IFSOCK | 0o600))]
    for child, parent in itertools.pairwise(chain):
        steps.insert(0, Lookup(parent, child))
    return steps


# -- the path rule: one parent above one child, every combination --------------------------

OWNERS = {"root": ROOT, "me": ME, "daemon": DAEMON, "stranger": STRANGER}
WRITE_BITS = {"none": 0o755, "none-private": 0o700, "group": 0o775, "other": 0o757, "both": 0o777}


@pytest.mark.parametrize(
    ("parent_owner", "writers", "sticky", "child_owner"),
    list(itertools.product(OWNERS, WRITE_BITS, (False, True), ("root", "me", "daemon"))),
)
def test_one_parent_every_owner_mode_and_sticky_bit(
    parent_owner: str, writers: str, sticky: bool, child_owner: str
) -> None:
    parent = d("/srv", OWNERS[parent_owner], WRITE_BITS[writers] | (stat.S_ISVTX if sticky else 0))
    child = d("/srv/queued", OWNERS[child_owner], 0o755)
    problem = path_problem(lookups(child, parent, SLASH), ME)
    if parent_owner not in ("root", "me"):
        # Its owner can rename the child away and put anything in its place.
        assert problem == f"/srv on the way to it belongs to uid {OWNERS[parent_owner]}"
    elif writers.startswith("none"):
        assert problem is None  # only root or we can add or replace names there
    elif sticky and child_owner in ("root", "me"):
        assert problem is None  # others may add names, but not replace ours or root's
    else:
        # Anyone in the group (or anyone at all) could have made the child first.
        mode = format(WRITE_BITS[writers] | (stat.S_ISVTX if sticky else 0), "04o")
        assert problem == f"/srv (mode {mode}) lets users other than root create /srv/queued in it"


@pytest.mark.parametrize(
    ("chain", "accepted"),
    [
        # The system units' layout without socket activation: /run/queued is the daemon's.
        ([d("/run/queued", DAEMON, 0o755), d("/run", ROOT, 0o755), SLASH], True),
        ([d("/run/queued", DAEMON, 0o700), d("/run", ROOT, 0o755), SLASH], True),
        # A root-made 0755 directory in /tmp, the daemon's directory in it.
        (
            [d("/tmp/sys/queued", DAEMON, 0o755), d("/tmp/sys", ROOT, 0o755), d("/tmp", ROOT, 0o1777), SLASH],
            True,
        ),
        # Under our own home, made for the daemon by root or by us.
        ([d("/home/me/q", DAEMON, 0o755), d("/home/me", ME, 0o700), d("/home", ROOT, 0o755), SLASH], True),
        # Another user's directory straight in /tmp or /var/tmp: first come, first served.
        ([d("/tmp/queued-1000", DAEMON, 0o700), d("/tmp", ROOT, 0o1777), SLASH], False),
        ([d("/var/tmp/q", DAEMON, 0o700), d("/var/tmp", ROOT, 0o1777), d("/var", ROOT, 0o755), SLASH], False),
        # One level deeper in /tmp, under a directory the daemon's user (not root) owns.
        (
            [d("/tmp/x/queued", DAEMON, 0o755), d("/tmp/x", DAEMON, 0o755), d("/tmp", ROOT, 0o1777), SLASH],
            False,
        ),
        # Another user's home above it; a group-writable directory high up.
        (
            [
                d("/home/bob/q", DAEMON, 0o755),
                d("/home/bob", STRANGER, 0o755),
                d("/home", ROOT, 0o755),
                SLASH,
            ],
            False,
        ),
        ([d("/srv/a/q", DAEMON, 0o755), d("/srv/a", ROOT, 0o755), d("/srv", ROOT, 0o775), SLASH], False),
        # A world-writable / (sticky or not) spoils everything under it.
        ([d("/q", DAEMON, 0o755), Entry("/", ROOT, DIR | 0o1777)], False),
        ([d("/run/q", DAEMON, 0o755), d("/run", ROOT, 0o755), Entry("/", ROOT, DIR | 0o777)], False),
    ],
)
def test_layouts(chain: list[Entry], accepted: bool) -> None:
    problem = shared_daemon_problem(DAEMON, ME, lookups(*chain))
    assert (problem is None) is accepted, problem


def test_the_daemon_must_own_its_directory() -> None:
    # /run/queued made by root (systemd's DirectoryMode) with another uid listening in it.
    directory = d("/run/queued", ROOT, 0o755)
    assert shared_daemon_problem(DAEMON, ME, lookups(directory, d("/run", ROOT, 0o755), SLASH)) == (
        "its directory /run/queued belongs to uid 0"
    )


def test_a_path_of_no_lookups_is_refused() -> None:
    assert trust.resolve("/") == []
    assert shared_daemon_problem(DAEMON, ME, []) == "its path names no socket"


@pytest.mark.parametrize(
    ("peer", "trusted", "expected"),
    [(ME, (), True), (ROOT, (), True), (DAEMON, (), False), (DAEMON, (DAEMON,), True), (DAEMON, (7,), False)],
)
def test_trusted_uids(peer: int, trusted: tuple[int, ...], expected: bool) -> None:
    assert trust.trusted_uid(peer, ME, frozenset(trusted)) is expected


# -- the fallback directory the client makes up ------------------------------------------


@pytest.mark.parametrize("owner", ["root", "me", "stranger"])
@pytest.mark.parametrize("mode", [0o700, 0o750, 0o705, 0o770, 0o777, 0o1777, 0o500])
def test_fallback_directory_must_be_ours_and_0700(owner: str, mode: int) -> None:
    problem = own_directory_problem(d("/tmp/queued-1000", OWNERS[owner], mode), ME)
    if owner != "me":
        assert problem == f"/tmp/queued-1000 is owned by uid {OWNERS[owner]}, not by you"
    elif mode & 0o077:
        assert problem == f"/tmp/queued-1000 is yours but has mode {mode:04o}, not 0700"
    else:
        assert problem is None


def test_fallback_directory_must_not_be_a_link_or_a_file() -> None:
    link = Entry("/tmp/queued-1000", STRANGER, stat.S_IFLNK | 0o777)
    assert "symbolic link owned by uid 4242" in (own_directory_problem(link, ME) or "")
    file = Entry("/tmp/queued-1000", ME, stat.S_IFREG | 0o600)
    assert own_directory_problem(file, ME) == "/tmp/queued-1000 is not a directory"


def test_trust_uids_from_the_environment() -> None:
    assert trust.parse_trust_uids("") == frozenset()
    assert trust.parse_trust_uids("990, 991 992") == {990, 991, 992}
    with pytest.raises(ValueError, match="'bob' is not a uid"):
        trust.parse_trust_uids("990 bob")


# -- the kernel's side, as ourselves -----------------------------------------------------


def test_peer_uid_is_the_listeners(tmp_path: Path) -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert trust.peer_uid(a) == os.geteuid()
        assert trust.check_listener(a, str(tmp_path / "x.sock"), frozenset()) is None


def test_resolve_follows_links_and_checks_where_each_one_lives(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "hop").symlink_to("real")  # relative
    (tmp_path / "link").symlink_to(tmp_path / "hop")  # absolute, to another link
    socket_path = tmp_path / "real" / "q.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_path))
    try:
        steps = trust.resolve(str(tmp_path / "link" / "q.sock"))
    finally:
        listener.close()
    looked_up = [step.found.path for step in steps]
    real = os.path.realpath(tmp_path)
    # From / down to tmp_path and its link; the link is absolute: from / again,
    # then the relative link beside it, its target, and the socket.
    down = [str(p) for p in reversed(Path(real).parents) if str(p) != "/"]
    down.append(real)
    assert looked_up == [*down, f"{real}/link", *down, f"{real}/hop", f"{real}/real", f"{real}/real/q.sock"]
    assert steps[0].directory.path == "/"
    assert all(step.directory.path == os.path.dirname(step.found.path) for step in steps)
    assert stat.S_ISSOCK(steps[-1].found.mode) and stat.S_ISLNK(steps[-3].found.mode)


def test_resolve_refuses_a_loop(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError, match="many"):
        trust.resolve(str(tmp_path / "a" / "q.sock"))


@pytest.mark.parametrize(
    ("link_dir_mode", "link_owner", "accepted"),
    [(0o755, ROOT, True), (0o1777, ROOT, True), (0o1777, STRANGER, False), (0o777, ROOT, False)],
)
def test_a_link_on_the_way_is_checked_where_it_lives(
    link_dir_mode: int, link_owner: int, accepted: bool
) -> None:
    # /var/run -> /run, as on most systems, or a link someone left in a writable directory.
    link_dir = d("/var", ROOT, link_dir_mode)
    steps = [
        Lookup(SLASH, link_dir),
        Lookup(link_dir, Entry("/var/run", link_owner, stat.S_IFLNK | 0o777)),
        Lookup(SLASH, d("/run", ROOT, 0o755)),
        *lookups(d("/run/queued", DAEMON, 0o755), d("/run", ROOT, 0o755), SLASH)[1:],
    ]
    problem = shared_daemon_problem(DAEMON, ME, steps)
    assert (problem is None) is accepted, problem


# -- the Client, with the listener's uid faked ---------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., FakeDaemon]]:
    """Fake daemons at tmp_path/q.sock (test_client's), stopped at the end."""
    daemons: list[FakeDaemon] = []

    def start(handler: Callable[[p.Request], p.Response | None]) -> FakeDaemon:
        daemons.append(FakeDaemon(tmp_path / "q.sock", handler))
        return daemons[-1]

    yield start
    for daemon in daemons:
        daemon.stop()


def heard_all(daemon: FakeDaemon) -> FakeDaemon:
    """Once the fake has accepted our one connection and read it to its end."""
    deadline = time.monotonic() + 10
    while daemon.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.stop()  # joins its thread, which leaves the connection only at EOF
    assert daemon.connections == 1
    return daemon


@pytest.fixture
def impostor(monkeypatch: pytest.MonkeyPatch) -> int:
    """Every listener looks like uid 4242 (tmp_path is ours, so 4242 owns no directory)."""
    monkeypatch.setattr(trust, "peer_uid", lambda sock: STRANGER)
    return STRANGER


def test_an_untrusted_listener_is_sent_nothing(serve, impostor: int) -> None:
    daemon = serve(lambda r: p.Added(ids=[1]))
    with Client(daemon.path, trust_uids=()) as client, pytest.raises(UntrustedDaemon) as caught:
        client.add("true", env={"SECRET": "s3cr3t"})
    message = str(caught.value)
    assert message.startswith(f"{daemon.path} is owned by uid 4242, not by you or root, and ")
    assert message.endswith("(if uid 4242 is a daemon you trust: --trust-uid 4242)")
    assert isinstance(caught.value, DaemonUnreachable)
    assert heard_all(daemon).requests == []  # not even the Hello


def test_the_cli_exits_3_with_one_line(serve, impostor: int, monkeypatch, capsys) -> None:
    daemon = serve(lambda r: p.Added(ids=[1]))
    monkeypatch.delenv("QUEUECTL_TRUST_UID", raising=False)
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "add", "true")
    assert (code, out) == (3, "")
    assert err.count("\n") == 1 and "is owned by uid 4242, not by you or root" in err
    assert "not sending it anything" in err
    assert heard_all(daemon).requests == []


def test_trust_uid_lets_a_named_uid_in(serve, impostor: int, monkeypatch, capsys) -> None:
    daemon = serve(lambda r: p.Added(ids=[7]))
    code, out, _ = run_cli(
        monkeypatch, capsys, "--socket", str(daemon.path), "--trust-uid", "4242", "add", "true"
    )
    assert (code, out) == (0, "added job 7\n")
    monkeypatch.setenv("QUEUECTL_TRUST_UID", "4242")
    code, out, _ = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "add", "true")
    assert (code, out) == (0, "added job 7\n")
    with Client(daemon.path) as client:  # the SDK reads the same variable
        assert client.add("true") == 7
    with Client(daemon.path, trust_uids=[STRANGER]) as client:
        assert client.add("true") == 7
    with Client(daemon.path, trust_uids=[]) as client, pytest.raises(UntrustedDaemon):
        client.add("true")  # an explicit list is the whole list


def test_a_bad_trust_uid_is_a_usage_error(monkeypatch, capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(
        monkeypatch, capsys, "--socket", str(tmp_path / "q.sock"), "--trust-uid", "bob", "ls"
    )
    assert code == 2 and "--trust-uid" in err
    monkeypatch.setenv("QUEUECTL_TRUST_UID", "bob")
    with pytest.raises(Exception, match="QUEUECTL_TRUST_UID='bob'"):
        Client(tmp_path / "q.sock")


def test_the_fallback_directory_is_checked_before_connecting(
    serve,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    daemon = serve(lambda r: p.JobList(jobs=[]))  # at tmp_path / "q.sock": ours, so trusted
    monkeypatch.setattr("queuectl.client.fallback_socket_dir", lambda: tmp_path)
    os.chmod(tmp_path, 0o755)
    with Client(daemon.path) as client, pytest.raises(UntrustedDaemon) as caught:
        client.list()
    assert f"{tmp_path} is yours but has mode 0755, not 0700" in str(caught.value)
    assert daemon.connections == 0  # not even connected: no thread to wait for
    assert "(chmod 700 it, or point QUEUED_SOCKET / --socket elsewhere)" in str(caught.value)
    os.chmod(tmp_path, 0o700)
    with Client(daemon.path) as client:
        assert client.list() == []


def test_a_fallback_directory_that_is_our_own_link_counts_as_what_it_names(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert trust.check_own_directory(str(tmp_path / "link")) is None
    os.chmod(tmp_path / "real", 0o755)
    assert "link is yours but has mode 0755" in (trust.check_own_directory(str(tmp_path / "link")) or "")
    assert trust.check_own_directory(str(tmp_path / "absent")) is None  # connecting says the rest


def test_a_reconnect_is_checked_again(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    # `logs -f` and `wait` keep one Client; after the daemon hangs up, the next
    # request connects again, and whoever listens by then is checked anew.
    listeners = iter([os.geteuid(), STRANGER])
    monkeypatch.setattr(trust, "peer_uid", lambda sock: next(listeners))
    daemon = serve(lambda r: None)  # answers the Hello, hangs up on the request
    with Client(daemon.path, trust_uids=()) as client:
        with pytest.raises(QueuectlError, match="closed"):
            client.status()
        with pytest.raises(UntrustedDaemon, match="uid 4242"):
            client.status()
    deadline = time.monotonic() + 10
    while daemon.connections < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.stop()
    assert [type(r) for r in daemon.requests] == [p.Hello, p.GetStatus]  # nothing on the second
