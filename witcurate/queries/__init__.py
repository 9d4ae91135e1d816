"""Dataset query list: dump reading, counting, PMI bigrams, titles, WordNet."""
