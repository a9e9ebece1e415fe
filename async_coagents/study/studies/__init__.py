"""The studies shipped with the package, one module each (see :mod:`async_coagents.study`)."""
