"""A strategy module that fails to import (worker start must name it and stop)."""

raise RuntimeError("this strategy module is broken on purpose")
