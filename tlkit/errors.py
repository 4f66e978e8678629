"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A problem with the user's input: the CLI prints it as one line and exits with code 2.

    The message names the thing that is wrong and what would work.

    Example:
        >>> raise UserError("unknown backbone 'vgg61'; choose one of: vgg16, vgg19, ...")
        Traceback (most recent call last):
        tlkit.errors.UserError: unknown backbone 'vgg61'; choose one of: vgg16, vgg19, ...
    """
