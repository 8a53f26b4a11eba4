"""The bale error tree. Every error the CLI reports is one of these (or a
``frontend.errors.FrontendError`` / ``snapshotter.errors.SnapshotError``).

    BaleError                 exit_code 1
    ├── UsageError            exit_code 2  bad flags, bad reference syntax, unknown transport
    ├── StoreError                         local store: missing image, corrupt record, lock
    │   └── ImageNotFound
    ├── FormatError                        malformed manifest/config/index, unknown media type
    │   └── DigestMismatch                 content does not hash to the digest that named it
    ├── RegistryError                      any failure talking to a registry
    │   ├── AuthError                      401/403, wrong password, no token
    │   └── NotFoundError                  404 for a manifest, blob or repository
    ├── SandboxError                       namespaces, mounts, pivot_root, exec
    ├── ContainerError                     working container missing or unusable
    │   └── RunFailed                      a command inside exited non-zero (carries status)
    └── BuildError                         a Dockerfile build step failed
        └── StepError                      ... at FILE:LINE: INSTRUCTION (the cause chained)

Messages are one line and name the image, file or container involved; the CLI
prints ``bale: <message>`` and exits with ``exit_code``.
"""
from __future__ import annotations


class BaleError(Exception):
    """Base of every error bale reports to the user."""

    exit_code = 1


class UsageError(BaleError):
    exit_code = 2


class StoreError(BaleError):
    pass


class ImageNotFound(StoreError):
    pass


class FormatError(BaleError):
    pass


class DigestMismatch(FormatError):
    pass


class RegistryError(BaleError):
    pass


class AuthError(RegistryError):
    pass


class NotFoundError(RegistryError):
    pass


class SandboxError(BaleError):
    pass


class ContainerError(BaleError):
    pass


class RunFailed(ContainerError):
    """A process in the sandbox exited non-zero; ``status`` is its exit code (128+N for signal N)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        #: `bale run` exits with the command's own status, as buildah run does
        self.exit_code = status if 0 < status < 256 else 1


class BuildError(BaleError):
    pass


class StepError(BuildError):
    """A Dockerfile step failed: ``FILE:LINE: INSTRUCTION: cause``. Raised only by the step
    runner (builder.build.scheduler), which chains the original error as ``__cause__``;
    ``exit_code`` is the cause's."""

    def __init__(self, file: str, line: int, instruction: str, cause: str, *, exit_code: int = 1) -> None:
        super().__init__(f"{file}:{line}: {instruction}: {cause}")
        self.file, self.line, self.instruction, self.cause_text = file, line, instruction, cause
        self.exit_code = exit_code
