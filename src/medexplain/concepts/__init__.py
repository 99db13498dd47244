"""medexplain.concepts."""
