"""Whom the client talks to. A job carries its command, its working directory
and the caller's whole environment (tokens, passwords): it goes only to a
daemon the caller has reason to trust, and that is decided before the first
byte is sent, from what the kernel says about the connected socket.

The rule, in README's "Security":

- The listener's uid (SO_PEERCRED on the connected socket: the credentials of
  the process that called listen()) is ours, or root's, or one the caller named
  (`--trust-uid`, QUEUECTL_TRUST_UID, `Client(trust_uids=...)`): trusted.
- Any other uid is trusted only as a shared system daemon: it owns the socket's
  directory, and nobody but root (or the caller) could have chosen that the
  path leads there. Like ssh's check of the path to authorized_keys, every
  directory on the way from `/` (each symbolic link's too, as the kernel
  follows them) is owned by root or the caller and writable by nobody else.
  A world-writable directory with the sticky bit, like /tmp, lets anyone
  create a name in it but not replace a name someone else owns: it passes
  when what we look up in it is root's or the caller's, never when it is the
  other uid's directory itself. So `/run/queued` (the system units'
  directory) passes, and a directory another user made in /tmp fails.
- The fallback directory the client makes up itself (/tmp/queued-UID, when
  neither QUEUED_SOCKET nor XDG_RUNTIME_DIR says where) is checked before
  connecting, as the daemon checks it: ours, and mode 0700.

The rules are pure functions over stat results (`Entry`), so that every
combination of owner, mode and sticky bit is tested without root; the I/O is
one getsockopt per connection, and a few stats only when the listener's uid is
neither ours nor root's.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from collections.abc import Collection, Sequence

ROOT = 0
TRUST_ENV = "QUEUECTL_TRUST_UID"


class Entry:
    """A directory (or a link, or the socket) as lstat() saw it. A plain class:
    a NamedTuple would cost `queuectl add` more to import than all of this."""

    __slots__ = ("mode", "path", "uid")

    def __init__(self, path: str, uid: int, mode: int) -> None:
        self.path = path
        self.uid = uid
        self.mode = mode  # st_mode

    def __repr__(self) -> str:
        return f"Entry({self.path!r}, uid={self.uid}, mode={self.mode:o})"

    def describe_mode(self) -> str:
        return format(stat.S_IMODE(self.mode), "04o")


# -- the rules (pure) ------------------------------------------------------------------


def trusted_uid(peer: int, me: int, trusted: Collection[int]) -> bool:
    """Our own daemon, root's, or one the caller named explicitly."""
    return peer in (me, ROOT) or peer in trusted


class Lookup:
    """One step of resolving the socket's path: a name looked up in `directory`
    named `found` (a directory, a symbolic link, or at the end the socket)."""

    __slots__ = ("directory", "found")

    def __init__(self, directory: Entry, found: Entry) -> None:
        self.directory = directory
        self.found = found

    def __repr__(self) -> str:
        return f"Lookup({self.directory!r}, {self.found!r})"


def path_problem(lookups: Sequence[Lookup], me: int) -> str | None:
    """Why someone other than root or `me` may have chosen where the path leads,
    or None. Every lookup but the last (the socket's own name, in its owner's
    directory) must be in a directory owned by root or `me` that nobody else
    can write, or that is sticky (like /tmp) and names something root or `me`
    owns: the sticky bit stops others replacing a name they do not own, not
    making a new one."""
    for step in lookups[:-1]:
        directory, found = step.directory, step.found
        if directory.uid not in (ROOT, me):
            return f"{directory.path} on the way to it belongs to uid {directory.uid}"
        others_write = directory.mode & (stat.S_IWGRP | stat.S_IWOTH)
        if others_write and not (directory.mode & stat.S_ISVTX and found.uid in (ROOT, me)):
            return (
                f"{directory.path} (mode {directory.describe_mode()}) lets users other than root "
                f"create {found.path} in it"
            )
    return None


def shared_daemon_problem(peer: int, me: int, lookups: Sequence[Lookup]) -> str | None:
    """Why uid `peer` is not a system daemon in a directory of its own that
    only root (or `me`) can have given it; None if it is."""
    if not lookups:  # "/" itself: nothing can listen there
        return "its path names no socket"
    directory = lookups[-1].directory
    if directory.uid != peer:
        return f"its directory {directory.path} belongs to uid {directory.uid}"
    return path_problem(lookups, me)


def own_directory_problem(directory: Entry, me: int) -> str | None:
    """Why the client's own fallback socket directory is not safe to use."""
    if stat.S_ISLNK(directory.mode):
        return f"{directory.path} is a symbolic link owned by uid {directory.uid}, not our directory"
    if not stat.S_ISDIR(directory.mode):
        return f"{directory.path} is not a directory"
    if directory.uid != me:
        return f"{directory.path} is owned by uid {directory.uid}, not by you"
    if stat.S_IMODE(directory.mode) & 0o077:
        return f"{directory.path} is yours but has mode {directory.describe_mode()}, not 0700"
    return None


def refusal_line(path: str, peer: int, problem: str) -> str:
    return (
        f"{path} is owned by uid {peer}, not by you or root, and {problem}: not sending it anything "
        f"(if uid {peer} is a daemon you trust: --trust-uid {peer})"
    )


def parse_trust_uids(text: str) -> frozenset[int]:
    """QUEUECTL_TRUST_UID: uids separated by spaces or commas."""
    uids = set()
    for word in text.replace(",", " ").split():
        if not word.isdigit():
            raise ValueError(f"{TRUST_ENV}={text!r}: {word!r} is not a uid (a number)")
        uids.add(int(word))
    return frozenset(uids)


# -- what the kernel says ---------------------------------------------------------------


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process that listens at the other end."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def lstat_entry(path: str) -> Entry:
    info = os.lstat(path)
    return Entry(path, info.st_uid, info.st_mode)


def resolve(path: str) -> list[Lookup]:
    """Every lookup the kernel makes to reach `path`, from `/`, following
    symbolic links (each one's directory is checked as well as its target's)."""
    current = "/"
    seen = {current: lstat_entry(current)}
    names = [name for name in reversed(os.path.abspath(path).split("/")) if name]
    lookups: list[Lookup] = []
    links = 0
    while names:
        name = names.pop()
        if name == ".":
            continue
        if name == "..":
            current = os.path.dirname(current)  # `current` is a real directory
            continue
        here = os.path.join(current, name)
        found = lstat_entry(here)
        lookups.append(Lookup(seen.get(current) or lstat_entry(current), found))
        if stat.S_ISLNK(found.mode):
            links += 1
            if links > 40:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            target = os.readlink(here)
            if target.startswith("/"):
                current = "/"
            names.extend(name for name in reversed(target.split("/")) if name)
            continue
        seen[here] = found
        current = here
    return lookups


def check_listener(sock: socket.socket, path: str, trusted: Collection[int]) -> str | None:
    """The one-line reason not to send anything on the connected `sock`, or None."""
    try:
        peer = peer_uid(sock)
    except OSError as exc:
        return f"cannot tell who serves {path} ({exc.strerror}): not sending it anything"
    me = os.geteuid()
    if trusted_uid(peer, me, trusted):
        return None
    try:
        lookups = resolve(path)
    except OSError as exc:
        return refusal_line(path, peer, f"its path cannot be checked ({exc.strerror})")
    problem = shared_daemon_problem(peer, me, lookups)
    return None if problem is None else refusal_line(path, peer, problem)


def check_own_directory(directory: str) -> str | None:
    """Before connecting to the fallback path: the one-line reason not to, or None.
    A directory that does not exist is no reason: the connection then fails."""
    me = os.geteuid()
    try:
        entry = lstat_entry(directory)
        if stat.S_ISLNK(entry.mode) and entry.uid == me:  # our own link: what it names counts
            info = os.stat(directory)
            entry = Entry(directory, info.st_uid, info.st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot check {directory} ({exc.strerror}): not connecting to the socket in it"
    problem = own_directory_problem(entry, me)
    if problem is None:
        return None
    remedy = "chmod 700 it" if entry.uid == me else "have root remove it"
    return (
        f"{problem}: not sending anything to the socket in it ({remedy}, or point "
        "QUEUED_SOCKET / --socket elsewhere)"
    )
