"""Visual fashion search: catalogue indexing and nearest-neighbour search."""
