"""medexplain.data."""
