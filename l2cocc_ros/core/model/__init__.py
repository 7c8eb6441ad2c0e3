"""L2COcc model blocks (one file per block of the paper's Fig. 2)."""
