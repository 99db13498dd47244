"""medexplain.train."""
