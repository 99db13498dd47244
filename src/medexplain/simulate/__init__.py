"""medexplain.simulate."""
