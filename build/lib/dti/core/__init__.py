"""What every other part of dti uses: the one-line input error, atomic file writes, device and dtype choices."""
