#!/usr/bin/env zsh
# complete.zsh FPATH_DIR LINE: prints the completions real zsh (compinit,
# the _egressd function in FPATH_DIR) offers at the end of LINE, one a
# line. An interactive zsh in a pseudo-terminal (zpty) completes LINE with
# TAB; compadd is wrapped to print each match. After the technique of
# zsh-capture-completion (Valodim, MIT).
zmodload zsh/zpty || exit 2
zpty z zsh -f -i
local line init
init=$(mktemp) || exit 2
cat > $init <<INIT
PROMPT=
fpath=($1 \$fpath)
autoload -U compinit
compinit -u -D
bindkey '^M' undefined
bindkey '^J' undefined
bindkey '^I' complete-word
null-line() { echo -E - \$'\0' }
compprefuncs=( null-line )
comppostfuncs=( null-line exit )
zstyle ':completion:*' list-grouped false
zstyle ':completion:*' insert-tab false
zstyle ':completion:*' list-separator ''
compadd() {
  if [[ \${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
    builtin compadd "\$@"
    return \$?
  fi
  typeset -a __hits
  builtin compadd -A __hits "\$@"
  (( \$#__hits )) || return
  local h
  for h in \$__hits; do echo -E - "\$h"; done
}
echo ok
INIT
zpty -w z "source $init"
repeat 4; do
  zpty -r z line
  [[ $line == ok* ]] && break
done
rm -f $init
[[ $line == ok* ]] || { echo 'zsh did not start' >&2; exit 2 }
zpty -w z "$2"$'\t'
integer tog=0
while zpty -r z; do :; done | while IFS= read -r line; do
  if [[ $line == *$'\0\r' ]]; then
    (( tog++ )) && exit 0 || continue
  fi
  (( tog )) && echo -E - ${line%$'\r'}
done
exit 2
