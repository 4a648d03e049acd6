"""Local tooling: the demo and its progress display, beside localcluster/ and images/.

Never imported by the controller."""
