"""weightcodec's tests (a package, so that tests import their helpers as ``tests.helpers``)."""
