"""Pure routing and capacity decisions: no I/O, no web framework, no hidden clock."""
