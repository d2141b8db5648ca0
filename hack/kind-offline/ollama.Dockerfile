# Stand-in for ollama/ollama:0.17.4 where no registry can be reached: the same Ollama version
# built for CPU from its Go module (hack/build-engines.sh), on Debian, laid out like the
# published image (binary in /usr/bin, entrypoint ollama, OLLAMA_HOST, bash for gpupin's hooks).
# Built by hack/kind-up.sh with the binary as the whole build context.
ARG BASE
FROM $BASE
COPY ollama /usr/bin/ollama
ENV OLLAMA_HOST=0.0.0.0:11434
EXPOSE 11434
ENTRYPOINT ["/usr/bin/ollama"]
CMD ["serve"]
