"""`python -m SpineSegDiffLib ...` is how Slicer's own Python runs the engine."""

from SpineSegDiffLib.cli.entry import main

raise SystemExit(main())
