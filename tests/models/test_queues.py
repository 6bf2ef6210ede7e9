"""The action queue a policy executes its chunks from, and what it reports of them (action_plan)."""

import copy
import pickle

import torch

from models.common.queues import ActionQueue


def test_the_queue_reports_the_chunk_and_how_much_of_it_was_taken_and_survives_a_copy():
    queue = ActionQueue(4)
    assert queue.action_plan() is None
    chunk = torch.arange(16.0).view(2, 4, 2)
    queue.plan(chunk)
    assert torch.equal(queue.popleft(), chunk[:, 0]) and torch.equal(queue.popleft(), chunk[:, 1])
    planned, taken = queue.action_plan()
    assert planned is chunk and taken == 2
    for copied in (copy.deepcopy(queue), pickle.loads(pickle.dumps(queue))):
        assert type(copied) is ActionQueue and copied.maxlen == 4 and len(copied) == 2
        assert torch.equal(copied.popleft(), chunk[:, 2]) and copied.action_plan()[1] == 3
