"""The base of every error that names a mistake in a user's input (a config, a data folder, a checkpoint,
a cluster setting): the command line prints it as one line, without a traceback (`ifrvis.cli`)."""


class UserError(ValueError):
    """A problem the user can fix from the message alone."""
