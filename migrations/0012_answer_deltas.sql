-- Where each of an answer's deltas ends in its text, so that a client that lost its connection
-- gets exactly the deltas it missed (`resume`), from whichever node reads the row: a JSON array
-- of byte offsets into `text`, the delta with `seq = i` ending at element i. Written with each
-- checkpoint and with the final text. NULL for questions and for answers stored before this.
ALTER TABLE messages ADD COLUMN delta_ends TEXT;
