-- A delivery that had settled (succeeded, or undeliverable) keeps that status in `settled` while a manual
-- retry makes it pending again: if the manual attempt fails, the delivery goes back to it instead of starting
-- the retry schedule over. An attempt acknowledged under a lease that was lost meanwhile (ended by a manual
-- retry, or run out) sets it to 'succeeded' too, so a later failure under the live lease does not undo it.
ALTER TABLE deliveries ADD COLUMN settled TEXT;
