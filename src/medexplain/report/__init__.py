"""medexplain.report."""
