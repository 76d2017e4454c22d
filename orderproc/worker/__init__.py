"""The live stream: the order producer and the consumer with its retry and dead-letter routing.

``consumer`` is the loop; ``decide`` says what happens to one record; ``routing``,
``holds``, ``offsets`` and ``breaker`` carry the decision out.
"""
