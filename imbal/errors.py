"""The one exception type that the CLI turns into a single line and exit status 2."""


class UserError(Exception):
    """Bad input from the user: a config, a path, a data set. Message is one line, no traceback."""


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite."""


class SweepStopped(Exception):
    """A signal stopped a sweep; its local workers were told and have ended."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the trainer stopped after the current step (the CLI knows it
    without importing torch)."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_dir = "RUN_DIR"  # filled in by the epoch loop, for the resume hint
