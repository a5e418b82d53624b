"""The seccomp filter every sandboxed program runs under, as the classic BPF program bwrap loads.

Network isolation does not rest on the empty network namespace alone: ``socket()`` is refused for
every address family but ``AF_UNIX`` (so no TCP/UDP/raw socket can even be created, whatever the
namespace holds), and so are the calls that would reach around that rule or around the sandbox's
other walls:

- ``io_uring_*``: io_uring can open sockets and files without the syscalls this filter sees;
- ``ptrace``, ``process_vm_readv/writev``: no reaching into other processes, not even the sandbox's own;
- ``keyctl``, ``add_key``, ``request_key``: the kernel keyrings are per user, so shared between runs;
- ``bpf``, ``perf_event_open``, ``userfaultfd``: large kernel attack surface no learner program needs.

Any other architecture than the native one (32-bit ``int 0x80`` calls on x86-64, where ``socketcall``
would bypass the ``socket`` rule) kills the process, and x32 system call numbers are refused.
Refused calls fail with an errno (``EACCES`` for sockets, ``ENOSYS`` for io_uring so that runtimes
such as libuv fall back, ``EPERM`` otherwise) rather than killing, so programs report a clear error.
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass

# BPF instruction classes and fields (linux/filter.h, linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0_LOW = 16  # args[0] is a u64 at offset 16; its low half comes first on little-endian machines
AF_UNIX = 1
_X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True)
class Arch:
    audit_arch: int
    socket: int
    denied: dict[int, int]  # syscall number -> errno
    x32_bit: bool = False


_IO_URING = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}
ARCHES: dict[str, Arch] = {
    "x86_64": Arch(
        audit_arch=0xC000003E,
        socket=41,
        denied={
            **dict.fromkeys(_IO_URING.values(), errno.ENOSYS),
            101: errno.EPERM,  # ptrace
            310: errno.EPERM,  # process_vm_readv
            311: errno.EPERM,  # process_vm_writev
            248: errno.EPERM,  # add_key
            249: errno.EPERM,  # request_key
            250: errno.EPERM,  # keyctl
            321: errno.EPERM,  # bpf
            298: errno.EPERM,  # perf_event_open
            323: errno.EPERM,  # userfaultfd
        },
        x32_bit=True,
    ),
    "aarch64": Arch(
        audit_arch=0xC00000B7,
        socket=198,
        denied={
            **dict.fromkeys(_IO_URING.values(), errno.ENOSYS),
            117: errno.EPERM,  # ptrace
            270: errno.EPERM,  # process_vm_readv
            271: errno.EPERM,  # process_vm_writev
            217: errno.EPERM,  # add_key
            218: errno.EPERM,  # request_key
            219: errno.EPERM,  # keyctl
            280: errno.EPERM,  # bpf
            241: errno.EPERM,  # perf_event_open
            282: errno.EPERM,  # userfaultfd
        },
    ),
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _ret(value: int) -> bytes:
    return _insn(_RET_K, value)


def filter_for(machine: str | None = None) -> bytes:
    """The filter for ``machine`` (default: this one) as bytes of ``struct sock_filter``, for ``bwrap --seccomp``.

    Raises ``KeyError`` on an architecture this module has no system call table for.
    """
    arch = ARCHES[machine or platform.machine()]
    prog = [
        _insn(_LD_W_ABS, _OFFSET_ARCH),
        _insn(_JEQ_K, arch.audit_arch, jt=1),
        _ret(RET_KILL_PROCESS),
        _insn(_LD_W_ABS, _OFFSET_NR),
    ]
    if arch.x32_bit:
        prog += [_insn(_JGE_K, _X32_SYSCALL_BIT, jf=1), _ret(_RET_ERRNO | errno.ENOSYS)]
    # socket(domain, ...): only AF_UNIX.
    prog += [
        _insn(_JEQ_K, arch.socket, jf=4),
        _insn(_LD_W_ABS, _OFFSET_ARG0_LOW),
        _insn(_JEQ_K, AF_UNIX, jf=1),
        _ret(RET_ALLOW),
        _ret(_RET_ERRNO | errno.EACCES),
    ]
    for number, err in sorted(arch.denied.items()):
        prog += [_insn(_JEQ_K, number, jf=1), _ret(_RET_ERRNO | err)]
    prog.append(_ret(RET_ALLOW))
    return b"".join(prog)
