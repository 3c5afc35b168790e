"""The chaos suite (issue 10): every fault the promise names, injected by one command.

``catalogue`` names the faults and what must hold; ``fleets`` is the lab a run breaks
(the loopback lab's and the distributed lab's, one protocol); ``runner``
injects, follows, heals; ``records`` reads the evidence back; ``verdict`` judges it
(pure); ``report`` renders the JSON, the table and the HTML page with its charts.
"""
