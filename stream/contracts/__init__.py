"""Message contracts: the messages that cross the boundary, their codec, the topic specs and
the key-to-partition rule. Imports nothing else of the project but its errors."""
