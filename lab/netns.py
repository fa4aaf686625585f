"""Network namespaces for the lab: prerequisites, the outer sandbox, and the topology.

The lab never touches the host's network namespace. ``sandbox_command`` wraps the lab's
inner orchestrator in ``unshare --user --map-root-user --net --mount --pid --fork``: a user
namespace of its own (so the same path works for root and for an unprivileged user), a
network namespace with nothing but a loopback (so no lab packet has a way out), a private
mount namespace (a tmpfs on /run holds the named namespaces) and a PID namespace whose
end kills every process the lab started. Inside, ``Namespaces`` creates one named
namespace per host with ``ip netns add`` and lets one process open sockets in any of them
with ``setns(2)``: a socket stays in the namespace it was created in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.plan import COLLECTOR_ADDRESS, INTERNET_NS, PUBLIC_RESOLVER, LabPlan
from shared.errors import FilterwatchError

CLONE_NEWNET = 0x40000000
_SEARCH_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin")
TOOLS = {
    "ip": "iproute2",
    "nft": "nftables",
    "iptables": "iptables",
    "iptables-restore": "iptables",
    "unshare": "util-linux",
    "nsenter": "util-linux",
}


class LabError(FilterwatchError):
    """The lab could not be built or run."""


def tool_path() -> str:
    """A PATH that finds the network tools also for users whose PATH lacks the sbin dirs."""
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    parts += [p for p in _SEARCH_PATH if p not in parts]
    return os.pathsep.join(parts)


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def missing_tools(search_path: str) -> list[str]:
    """A problem, with its fix, for each Debian package whose tools are not on ``search_path``."""
    missing: dict[str, list[str]] = {}
    for tool, package in TOOLS.items():
        if shutil.which(tool, path=search_path) is None:
            missing.setdefault(package, []).append(tool)
    return [
        f"{', '.join(tools)} not found: install the Debian package {package} "
        f"(apt-get install {package}) or run scripts/setup as root"
        for package, tools in missing.items()
    ]


@dataclass(frozen=True, slots=True)
class UsernsSettings:
    """The kernel settings that decide whether this user may make a user namespace."""

    root: bool
    max_user_namespaces: int | None  # /proc/sys/user/max_user_namespaces
    unprivileged_userns_clone: int | None  # Debian and Ubuntu kernels only
    apparmor_restrict_unprivileged_userns: int | None  # Ubuntu 23.10 and later

    @classmethod
    def read(cls) -> UsernsSettings:
        return cls(
            root=os.geteuid() == 0,
            max_user_namespaces=_read_int("/proc/sys/user/max_user_namespaces"),
            unprivileged_userns_clone=_read_int("/proc/sys/kernel/unprivileged_userns_clone"),
            apparmor_restrict_unprivileged_userns=_read_int(
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
            ),
        )


def userns_problems(settings: UsernsSettings) -> list[str]:
    """Why user namespaces are off for this user, each with the command that fixes it."""
    problems: list[str] = []
    if settings.max_user_namespaces == 0:
        problems.append(
            "user namespaces are disabled (user.max_user_namespaces = 0): "
            "run `sysctl -w user.max_user_namespaces=15000` as root"
        )
    if settings.root:
        return problems
    if settings.unprivileged_userns_clone == 0:
        problems.append(
            "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0): "
            "run `sysctl -w kernel.unprivileged_userns_clone=1` as root, or run the lab as root"
        )
    if settings.apparmor_restrict_unprivileged_userns == 1:
        problems.append(
            "AppArmor restricts unprivileged user namespaces "
            "(kernel.apparmor_restrict_unprivileged_userns = 1): run "
            "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` as root, "
            "or run the lab as root"
        )
    return problems


def check_prerequisites() -> list[str]:
    """What stops the lab from running here, each with its fix; empty when all is well."""
    problems = missing_tools(tool_path()) + userns_problems(UsernsSettings.read())
    if not problems:
        unshare = shutil.which("unshare", path=tool_path()) or "unshare"
        try:
            probe = subprocess.run(
                [unshare, "--user", "--map-root-user", "--net", "--mount", "true"],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"cannot start unshare: {exc}")
        else:
            if probe.returncode != 0:
                problems.append(
                    "cannot create a user and network namespace "
                    f"({probe.stderr.strip() or 'unshare failed'}): enable user namespaces "
                    "(`sysctl -w user.max_user_namespaces=15000`, and on Debian/Ubuntu "
                    "`sysctl -w kernel.unprivileged_userns_clone=1`) or run the lab as root"
                )
    return problems


def sandbox_command(inner: Sequence[str]) -> list[str]:
    """The command that runs ``inner`` in the lab's own user, network, mount and PID namespaces."""
    unshare = shutil.which("unshare", path=tool_path()) or "unshare"
    return [
        unshare,
        "--user",
        "--map-root-user",
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        *inner,
    ]


def set_parent_death_signal() -> None:
    """In a child before exec: die with the parent, so that a killed ``lab run`` leaves nothing."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, 9, 0, 0, 0)


async def run(argv: Sequence[str], stdin: str | None = None, what: str | None = None) -> str:
    """Run a tool to completion; LabError with its message when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PATH": tool_path()},
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
        raise LabError(f"{what or argv[0]} failed: {' '.join(argv)}: {detail}")
    return out.decode(errors="replace")


class Namespaces:
    """Named network namespaces inside the sandbox, and ``setns`` into them."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._fds: dict[str, int] = {}
        self.ip = shutil.which("ip", path=tool_path()) or "ip"
        self.nft = shutil.which("nft", path=tool_path()) or "nft"
        self.iptables_restore = (
            shutil.which("iptables-restore", path=tool_path()) or "iptables-restore"
        )
        self.nsenter = shutil.which("nsenter", path=tool_path()) or "nsenter"

    @staticmethod
    def prepare_mounts() -> None:
        """A private tmpfs on /run for ``ip netns`` (the mount namespace is the lab's own)."""
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"tmpfs", b"/run", b"tmpfs", 0, b"mode=0755") != 0:
            err = ctypes.get_errno()
            raise LabError(f"cannot mount a tmpfs on /run inside the lab: {os.strerror(err)}")
        os.makedirs("/run/netns", exist_ok=True)

    async def add(self, name: str) -> None:
        await run([self.ip, "netns", "add", name])
        self._fds[name] = os.open(f"/run/netns/{name}", os.O_RDONLY)

    def _setns(self, fd: int) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"setns failed: {os.strerror(err)}")

    @contextlib.contextmanager
    def inside(self, name: str) -> Iterator[None]:
        """Run the block in namespace ``name``. Never await inside: the whole thread moves."""
        self._setns(self._fds[name])
        try:
            yield
        finally:
            self._setns(self._home)

    def make_socket(self, name: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A non-blocking IPv4 socket that lives in namespace ``name``."""
        with self.inside(name):
            sock = socket.socket(socket.AF_INET, kind)
        sock.setblocking(False)
        return sock

    def listener(
        self, name: str, address: str, port: int, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        sock = self.make_socket(name, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(512)
        return sock

    def write_sysctl(self, name: str, key: str, value: str) -> None:
        with self.inside(name):
            Path("/proc/sys/" + key.replace(".", "/")).write_text(value)

    def exec_prefix(self, name: str) -> list[str]:
        """The command prefix that runs a program in namespace ``name``."""
        return [self.nsenter, f"--net=/run/netns/{name}", "--"]

    async def ip_batch(self, name: str, commands: Sequence[str]) -> None:
        await run(
            [self.ip, "-n", name, "-batch", "-"],
            stdin="\n".join(commands) + "\n",
            what=f"ip in {name}",
        )

    async def nft_apply(self, name: str, ruleset: str) -> None:
        await run(
            [*self.exec_prefix(name), self.nft, "-f", "-"], stdin=ruleset, what=f"nft in {name}"
        )

    async def iptables_apply(self, name: str, rules: str) -> None:
        await run(
            [*self.exec_prefix(name), self.iptables_restore, "--noflush"],
            stdin=rules,
            what=f"iptables-restore in {name}",
        )

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


@dataclass(frozen=True, slots=True)
class Topology:
    """The ip commands that build a plan's namespaces, grouped by the namespace they run in."""

    namespaces: tuple[str, ...]
    batches: tuple[tuple[str, tuple[str, ...]], ...]  # (namespace, commands), in order
    routers: tuple[str, ...]  # namespaces that forward


def topology(plan: LabPlan) -> Topology:
    """Pure: every namespace and ``ip`` command for ``plan``."""
    names = [INTERNET_NS]
    internet = ["link set lo up"]
    for address in sorted(
        {*(s.address for s in plan.sites), PUBLIC_RESOLVER, COLLECTOR_ADDRESS, plan.blockpage_ip}
    ):
        internet.append(f"address add {address}/32 dev lo")
    batches: list[tuple[str, tuple[str, ...]]] = []
    router_batches: list[tuple[str, tuple[str, ...]]] = []
    agent_batches: list[tuple[str, tuple[str, ...]]] = []
    for isp in plan.isps:
        names.append(isp.netns)
        internet += _link(isp.internet_ifname, "wan", isp.netns, f"{isp.internet_side}/24")
        router = _far_end("wan", f"{isp.public_address}/24", isp.internet_side)
        for agent in isp.agents:
            names.append(agent.netns)
            router += _link(agent.router_ifname, "eth0", agent.netns, f"{agent.router_side}/30")
            agent_batches.append(
                (agent.netns, tuple(_far_end("eth0", f"{agent.address}/30", agent.router_side)))
            )
        router_batches.append((isp.netns, tuple(router)))
    batches.append((INTERNET_NS, tuple(internet)))
    batches += router_batches + agent_batches
    return Topology(tuple(names), tuple(batches), tuple(isp.netns for isp in plan.isps))


def _link(ifname: str, peer: str, netns: str, address: str) -> list[str]:
    """A veth pair seen from this end: ``ifname`` here with ``address`` (CIDR) on it, up;
    ``peer`` in namespace ``netns``."""
    return [
        f"link add {ifname} type veth peer name {peer} netns {netns}",
        f"address add {address} dev {ifname}",
        f"link set {ifname} up",
    ]


def _far_end(ifname: str, address: str, gateway: str) -> list[str]:
    """The other end of a link: loopback and ``ifname`` up, ``address`` (CIDR) on it and
    the default route through ``gateway``."""
    return [
        "link set lo up",
        f"address add {address} dev {ifname}",
        f"link set {ifname} up",
        f"route add default via {gateway}",
    ]


async def build(namespaces: Namespaces, plan: LabPlan) -> Topology:
    """Create every namespace and link of ``plan`` inside the sandbox."""
    topo = topology(plan)
    for name in topo.namespaces:
        await namespaces.add(name)
    for name, commands in topo.batches:
        await namespaces.ip_batch(name, commands)
    for name in topo.routers:
        namespaces.write_sysctl(name, "net.ipv4.ip_forward", "1")
    return topo
