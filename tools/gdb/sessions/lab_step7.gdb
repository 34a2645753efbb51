# tools/gdb/sessions/lab_step7.gdb: the session of docs/debugging.md, "Walkthrough: one
# head of LSH attention, in gdb": the course lab's step 7 (examples/reformer_lab --step 7).
#   tools/gdb/sessions/run.sh BUILD_DIR lab_step7
set trace-commands on
set pagination off
set style enabled off
set print frame-arguments scalars
# One call per (example, head): stop in the first, head 0.
break minitrax::layers::research::LSHSelfAttentionLayer::forward_unbatched
run
print x
print *this
# The buckets, once hashed: sort_buckets is the next call, so stop there and look up.
tbreak minitrax::layers::research::sort_buckets
continue
up
print update_state
set minitrax-edge-items 20
print buckets
set minitrax-edge-items 3
# The sort and the sorted queries and values: all made when attend is called.
tbreak minitrax::layers::research::attend
continue
up
set minitrax-edge-items 20
print sorted.sticker
print sorted.undo_sort
print st
set minitrax-edge-items 3
print sq
print sv
down
# Inside attend: the dots before and after the masks.
tbreak minitrax::layers::research::mask_self_attention
continue
set minitrax-edge-items 2
print dots
print kv_info
finish
set minitrax-edge-items 3
frame function minitrax::layers::research::attend
finish
# Back in forward_unbatched: the rounds' logsumexps, unsorted, then the head's output.
tbreak minitrax::layers::research::permute_via_sort
continue
finish
frame function minitrax::layers::research::LSHSelfAttentionLayer::forward_unbatched
finish
delete
continue
