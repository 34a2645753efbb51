# tools/gdb/sessions/reversible.gdb: the session of docs/debugging.md, "Walkthrough: a
# reversible block's backward pass": examples/reversible_debug (one SGD step of
# ReversibleSerial([ReversibleHalfResidual([LayerNorm], LSHSelfAttention)])) in gdb.
#   tools/gdb/sessions/run.sh BUILD_DIR reversible
set trace-commands on
set pagination off
set style enabled off
set print frame-arguments scalars
set minitrax-edge-items 8
# The forward pass: the attention layer hashes and stores its buckets.
break minitrax::layers::research::LSHSelfAttentionLayer::forward_unbatched
run
print state_in[0]
tbreak minitrax::layers::research::sort_buckets
continue
up
print update_state
print buckets
# The backward pass: rebuild the block's input from its output.
break minitrax::layers::ReversibleHalfResidualLayer::reverse_and_grad
continue
set minitrax-edge-items 3
print outputs
continue
bt 6
print update_state
print this->update_state_
tbreak minitrax::layers::research::sort_buckets
continue
up
set minitrax-edge-items 8
print buckets
print state_in[0]
set minitrax-edge-items 3
# acc = (acc + residual) - residual: the subtraction reverse_and_grad makes.
tbreak minitrax::core::sub if $_caller_is("minitrax::layers::ReversibleHalfResidualLayer::reverse_and_grad")
continue
up
print residual
print outputs[0]
down
finish
delete
continue
