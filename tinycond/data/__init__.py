"""Data sets: 2-D toy tasks (:mod:`.toy`), the parity task and the text corpus."""
