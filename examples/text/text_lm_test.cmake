# examples/text/text_lm_test.cmake: the text trainer end to end, as a user runs it (a
# ctest of examples/CMakeLists.txt), on the Markdown pages of docs/ (a glob of real text
# files, UTF-8 with a few non-ASCII characters):
#   1. trains a tiny character-level ReformerLM: held-out bits per character, a sample,
#      and the run's files (config.json, tokenizer.json, metrics.jsonl, ckpt_best.npz,
#      curves.svg, results.json);
#   2. --resume continues it (and a run resumed halfway ends with the uninterrupted run's
#      checkpoint, byte for byte); --sample-from samples a batch of two prompts;
#   3. SentencePiece subwords train and sample the same way; so do bytes with a
#      TransformerLM;
#   4. bad input: an empty file, a text smaller than one window, binary data for a
#      character vocabulary, a prompt outside the vocabulary, a SentencePiece model that
#      does not load: each a clear message and exit status 1 (or 2 for bad flags).
#   cmake -DPROGRAM=<text_lm> -DDOCS=<source>/docs -DWORK=<scratch dir> -P text_lm_test.cmake
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

set(tiny --length 64 --chunk-len 16 --batch 2 --d-model 16 --d-ff 32 --n-layers 1
         --n-heads 2 --d-attention-key 8 --d-attention-value 8 --eval-fraction 0.05
         --eval-batches 2 --progress none --sample-length 12)

# run(<expected status> <name> ARGS...): runs the program; its output in <name>_out.
function(run expect name)
  execute_process(COMMAND ${PROGRAM} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  if(NOT rc STREQUAL "${expect}")
    message(FATAL_ERROR "${name}: exit status '${rc}', expected ${expect}\n"
                        "stdout:\n${out}\nstderr:\n${err}")
  endif()
  set(${name}_out "${out}${err}" PARENT_SCOPE)
  message(STATUS "${name}: exit ${rc}")
endfunction()

function(expect_in name text)
  string(FIND "${${name}_out}" "${text}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${name}: the output lacks\n  ${text}\noutput:\n${${name}_out}")
  endif()
endfunction()

# 1. train
run(0 train --data "${DOCS}/*.md" --output-dir ${WORK}/chars --steps 12 --eval-every 6
    --sample-every 6 --sample-prompt "The " ${tiny})
expect_in(train "tokens: chars")
expect_in(train "sample at step 12")
expect_in(train "held-out bits per character")
foreach(f config.json tokenizer.json metrics.jsonl ckpt_best.npz ckpt_best.json curves.svg
          results.json ckpt_000000012.npz)
  if(NOT EXISTS ${WORK}/chars/${f})
    message(FATAL_ERROR "train: ${WORK}/chars/${f} was not written")
  endif()
endforeach()
file(READ ${WORK}/chars/metrics.jsonl metrics)
string(REGEX MATCHALL "\"bits_per_character\"" bpc_lines "${metrics}")
list(LENGTH bpc_lines n_bpc)
if(NOT n_bpc EQUAL 2)
  message(FATAL_ERROR "metrics.jsonl has ${n_bpc} evaluations with bits_per_character, "
                      "expected 2 (steps 6 and 12):\n${metrics}")
endif()

# 2. resume, then sample a batch of prompts from the run
run(2 again --data "${DOCS}/*.md" --output-dir ${WORK}/chars --steps 16 ${tiny})
expect_in(again "already holds a run")
run(0 resume --data "${DOCS}/*.md" --output-dir ${WORK}/chars --steps 16 --resume ${tiny})
expect_in(resume "resumed from step 12")
run(0 sample --sample-from ${WORK}/chars --prompt "The " --prompt "A model"
    --sample-temperature 0.5 --sample-top-k 5)
expect_in(sample "--- prompt 2: \"A model\"")
run(2 sample_flag --sample-from ${WORK}/chars --d-model 3)
expect_in(sample_flag "only the sample_* settings and seed may be given, got --d-model")
run(1 prompt_outside --sample-from ${WORK}/chars --prompt "日本")
expect_in(prompt_outside "prompt character 0 '日' (U+65E5) is not in the vocabulary of")

# 2b. an interrupted run resumed ends where an uninterrupted one does, byte for byte: the
#     text pipeline's position is in the checkpoint
run(0 straight --data "${DOCS}/*.md" --output-dir ${WORK}/straight --steps 8
    --checkpoint-every 4 --eval-every 4 --sample-every 0 ${tiny})
run(0 first_half --data "${DOCS}/*.md" --output-dir ${WORK}/halves --steps 4
    --checkpoint-every 4 --eval-every 4 --sample-every 0 ${tiny})
run(0 second_half --data "${DOCS}/*.md" --output-dir ${WORK}/halves --steps 8 --resume
    --checkpoint-every 4 --eval-every 4 --sample-every 0 ${tiny})
file(SHA256 ${WORK}/straight/ckpt_000000008.npz straight_hash)
file(SHA256 ${WORK}/halves/ckpt_000000008.npz halves_hash)
if(NOT straight_hash STREQUAL halves_hash)
  message(FATAL_ERROR "a run resumed at step 4 ends with another checkpoint than the "
                      "uninterrupted one (step 8)")
endif()

# 3. SentencePiece subwords
run(0 subwords --data "${DOCS}/*.md" --output-dir ${WORK}/sp --tokenizer sentencepiece
    --sp-vocab-size 400 --steps 4 --eval-every 4 --sample-every 0 ${tiny})
expect_in(subwords "tokens: sentencepiece, 400 ids")
if(NOT EXISTS ${WORK}/sp/tokenizer.model)
  message(FATAL_ERROR "subwords: ${WORK}/sp/tokenizer.model was not written")
endif()
run(0 sp_sample --sample-from ${WORK}/sp --prompt "The model")
file(WRITE ${WORK}/sp/tokenizer.model "not a SentencePiece model\n")
run(1 sp_broken --sample-from ${WORK}/sp --prompt "The model")
expect_in(sp_broken "tokenizer.model")

# 3b. bytes, and a TransformerLM instead of a ReformerLM, sampled from the saved run
run(0 bytes_transformer --data "${DOCS}/*.md" --output-dir ${WORK}/bytes --tokenizer bytes
    --model transformer --steps 3 --eval-every 3 --sample-every 3 ${tiny})
expect_in(bytes_transformer "tokens: bytes, 258 ids")
expect_in(bytes_transformer "TransformerLM")
run(0 bytes_sample --sample-from ${WORK}/bytes --prompt "日本" --sample-top-p 0.9)
expect_in(bytes_sample "--- prompt 1: \"日本\"")

# 4. bad data
file(WRITE ${WORK}/empty.txt "")
run(1 empty --data ${WORK}/empty.txt --output-dir ${WORK}/e1 ${tiny})
expect_in(empty "empty.txt")
file(WRITE ${WORK}/short.txt "just a few words\n")
run(1 short --data ${WORK}/short.txt --output-dir ${WORK}/e2 ${tiny})
expect_in(short "short.txt")
# Random bytes (a deterministic LCG): most bytes >= 0x80 are not valid UTF-8 here.
set(binary "")
set(x 12345)
foreach(i RANGE 3000)
  math(EXPR x "(${x} * 1103515245 + 12345) % 2147483648")
  math(EXPR b "(${x} / 65536) % 255 + 1")
  string(ASCII ${b} ch)
  string(APPEND binary "${ch}")
endforeach()
file(WRITE ${WORK}/binary.bin "${binary}")
run(1 binary --data ${WORK}/binary.bin --output-dir ${WORK}/e3 ${tiny})
expect_in(binary "does not look like UTF-8 text")
message(STATUS "text_lm: every check passed")
