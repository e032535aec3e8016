"""The process's place in an MPI job (or a plain run): who speaks, who writes, how it was
launched, and how it ends."""
import contextlib
import io as textio
import os
import sys
from typing import Any

from .. import parallel as mpi
from ..backend import get_backend


class Job:
    """``rank`` and ``size`` of this process's MPI job (0 and 1 in a plain run), ``parallel``
    (the :class:`gpumlp.parallel.DataParallel` that training takes, None in a plain run)
    and ``comm``.  Rank 0 alone prints and writes files."""

    def __init__(self, parallel: Any = None) -> None:
        self.parallel = parallel
        self.comm = None if parallel is None else parallel.comm
        self.rank = 0 if parallel is None else parallel.rank
        self.size = 1 if parallel is None else parallel.size
        self.quiet = False               # stdout's reader has gone (`gpumlp train | head`)

    @classmethod
    def from_environment(cls) -> "Job":
        return cls(mpi.from_environment())

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def launch(self) -> str:
        """The command that started this job, as a hint repeats it."""
        return "gpumlp" if self.size == 1 else f"mpiexec -n {self.size} gpumlp"

    def say(self, *args: Any, **kwargs: Any) -> None:
        """print, on rank 0 only.  When the reader of stdout has gone, the run goes on quietly
        and still saves its files."""
        if not self.is_root or self.quiet:
            return
        try:
            print(*args, **kwargs)
            sys.stdout.flush()
        except BrokenPipeError:
            silence_stdout()
            self.quiet = True

    def backend(self, device: Any) -> Any:
        """The backend for ``device``, chosen once the job is known: each rank takes the GPU of its
        number on its machine, and only rank 0 tells why it uses the CPU."""
        if self.parallel is not None and str(device or "").lower() != "cpu":
            self.parallel.use_local_gpu()
        if self.is_root:
            return get_backend(device)
        with contextlib.redirect_stderr(textio.StringIO()):
            return get_backend(device)

    def share(self, problem: str | None) -> None:
        """Rank 0's verdict on something only it checks (None: fine), raised on every rank."""
        if self.comm is not None:
            problem = self.comm.bcast(problem, root=0)
        if problem:
            raise ValueError(problem)

    def end(self, code: int, collective: bool = True) -> int:
        """The exit status ``code``.  In a job of more than one rank, a failure every rank met
        (``collective``) ends the process cleanly at once, without the MPI_Abort that an
        exception would bring under ``python -m mpi4py``; one that only this rank met aborts
        the job, or the others would wait forever."""
        if self.size == 1 or code == 0:
            return code
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        if not collective and self.comm is not None:
            self.comm.Abort(code)
        with contextlib.suppress(Exception):
            self.parallel.MPI.Finalize()
        os._exit(code)


def silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
