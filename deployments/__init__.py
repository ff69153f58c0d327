"""Fleet description (profiles) and the Ray Serve application built from it."""
