"""One module per `spinesegdiff` sub-command.

Each module defines ``HELP`` (one line), ``configure_parser(parser)`` and
``run(args) -> int``. They are imported only when their command runs, so
`spinesegdiff --help` stays fast (torch is slow to import).
"""
