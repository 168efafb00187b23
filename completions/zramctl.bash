# bash completion for zramctl, the user-space zram (util-linux zramctl's options plus verbs).
# Install as /usr/share/bash-completion/completions/zramctl, or source it.
# The lists below are checked against zramctl's own tables by tests/test_completion.py.

_zramctl_root()
{
	# The image directory: --root on the command line, else $ZRAMCTL_ROOT, else the XDG state dir.
	local i root=""
	for (( i = 1; i < COMP_CWORD; i++ )); do
		case ${COMP_WORDS[i]} in
			--root)
				# "--root=DIR" is split at "=" by COMP_WORDBREAKS
				if [[ ${COMP_WORDS[i+1]} == "=" ]]; then
					root=${COMP_WORDS[i+2]}
				else
					root=${COMP_WORDS[i+1]}
				fi
				;;
			--root=*)
				root=${COMP_WORDS[i]#--root=}
				;;
		esac
	done
	[[ -z $root ]] && root=${ZRAMCTL_ROOT:-}
	if [[ -z $root ]]; then
		if [[ ${XDG_STATE_HOME:-} == /* ]]; then
			root=$XDG_STATE_HOME/zramctl
		else
			root=$HOME/.local/state/zramctl
		fi
	fi
	[[ $root == "~"* ]] && root=$HOME${root#"~"}
	printf '%s\n' "$root"
}

_zramctl_devices()
{
	# The devices under the root: zramN.img files.
	local root f name
	root=$(_zramctl_root)
	for f in "$root"/zram*.img; do
		[[ -f $f ]] || continue
		name=${f##*/}
		name=${name%.img}
		[[ $name =~ ^zram(0|[1-9][0-9]*)$ ]] && printf '%s\n' "$name"
	done
}

_zramctl_complete_devices()
{
	local cur=$1 prefix=""
	[[ $cur == /dev/* ]] && prefix=/dev/
	local IFS=$'\n'
	COMPREPLY+=( $(compgen -P "$prefix" -W "$(_zramctl_devices)" -- "${cur#"$prefix"}") )
}

_zramctl_module()
{
	local cur prev i word verb="" first=0 nargs=0 atfirst=1
	local VERBS="write read discard attr stat compact hot-add hot-remove check estimate"
	local ALLOCATORS="zsmalloc zsmalloc:4 zsmalloc:16 zsmalloc:3.11 zbud z3fold"
	local ALGORITHMS="lzo-rle lzo lz4 lz4hc zstd deflate"
	local COLUMNS="NAME DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED COMP-RATIO MOUNTPOINT"
	local ATTRIBUTES="disksize initstate reset max_comp_streams compat comp_algorithm algorithm_params mm_stat io_stat debug_stat mem_limit mem_used_max compact num_reads num_writes invalid_io notify_free zero_pages orig_data_size compr_data_size mem_used_total"
	local COMPATS="3.11 6.18"
	COMPREPLY=()
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD-1]}
	# "--opt=value": bash splits it into "--opt" "=" "value"
	if [[ $cur == "=" ]]; then
		cur=""
	elif [[ $prev == "=" && $COMP_CWORD -ge 2 ]]; then
		prev=${COMP_WORDS[COMP_CWORD-2]}
	fi

	# The verb, if the first word after the global options (--root, --compat) is one.
	for (( i = 1; i < COMP_CWORD; i++ )); do
		word=${COMP_WORDS[i]}
		case $word in
			--root|--compat)
				(( i++ ))
				[[ ${COMP_WORDS[i]} == "=" ]] && (( i++ ))
				continue
				;;
			--root=*|--compat=*)
				continue
				;;
		esac
		if [[ " $VERBS " == *" $word "* ]]; then
			verb=$word
			first=$i
		fi
		atfirst=0
		break
	done

	case $prev in
		--root)
			compopt -o dirnames 2>/dev/null
			COMPREPLY=( $(compgen -d -- "$cur") )
			return 0
			;;
		--compat)
			COMPREPLY=( $(compgen -W "$COMPATS" -- "$cur") )
			return 0
			;;
	esac

	if [[ -n $verb ]]; then
		# Count the verb's operands before the current word.
		for (( i = first + 1; i < COMP_CWORD; i++ )); do
			case ${COMP_WORDS[i]} in
				--offset|--length|--root|-a|--algorithm|--allocator|-t|--threads)
					(( i++ ))
					[[ ${COMP_WORDS[i]} == "=" ]] && (( i++ ))
					;;
				-?*) ;;
				*) (( nargs++ )) ;;
			esac
		done
		case $verb:$prev in
			*:--offset|*:--length|estimate:-t|estimate:--threads|estimate:--pid)
				return 0
				;;
			estimate:-a|estimate:--algorithm)
				COMPREPLY=( $(compgen -W "$ALGORITHMS" -- "$cur") )
				return 0
				;;
			estimate:--allocator)
				COMPREPLY=( $(compgen -W "$ALLOCATORS" -- "$cur") )
				__ltrim_colon_completions "$cur" 2>/dev/null
				return 0
				;;
		esac
		if [[ $cur == -?* ]]; then
			local opts="--root --help"
			case $verb in
				write) opts="--offset $opts" ;;
				read|discard) opts="--offset --length $opts" ;;
				stat) opts="--json $opts" ;;
				check) opts="--data $opts" ;;
				estimate) opts="--pid --all-processes --algorithm --allocator --threads --json --bytes --raw --help" ;;
			esac
			COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
			return 0
		fi
		case $verb:$nargs in
			hot-add:*)
				;;
			estimate:*)
				# the data: a file or - (after --pid: process ids, not completed)
				[[ " ${COMP_WORDS[*]:first:COMP_CWORD-first} " == *" --pid "* ]] && return 0
				compopt -o filenames 2>/dev/null
				local IFS=$'\n'
				COMPREPLY=( $(compgen -f -- "$cur") )
				[[ -z $cur || $cur == - ]] && COMPREPLY+=( - )
				;;
			*:0)
				_zramctl_complete_devices "$cur"
				;;
			write:1)
				compopt -o filenames 2>/dev/null
				local IFS=$'\n'
				COMPREPLY=( $(compgen -f -- "$cur") )
				[[ -z $cur || $cur == - ]] && COMPREPLY+=( - )
				;;
			attr:1)
				COMPREPLY=( $(compgen -W "$ATTRIBUTES" -- "$cur") )
				;;
			attr:2)
				case ${COMP_WORDS[COMP_CWORD-1]} in
					comp_algorithm) COMPREPLY=( $(compgen -W "$ALGORITHMS" -- "$cur") ) ;;
					compat) COMPREPLY=( $(compgen -W "$COMPATS" -- "$cur") ) ;;
					reset|compact|mem_used_max) COMPREPLY=( $(compgen -W "1" -- "$cur") ) ;;
				esac
				;;
		esac
		return 0
	fi

	case $prev in
		'-a'|'--algorithm')
			COMPREPLY=( $(compgen -W "$ALGORITHMS" -- "$cur") )
			return 0
			;;
		'-o'|'--output')
			# A comma-separated list: offer the names not typed yet.
			local prefix realcur typed OUTPUT="" WORD
			realcur="${cur##*,}"
			prefix="${cur%"$realcur"}"
			typed=",${prefix#+},"
			for WORD in $COLUMNS; do
				if [[ ${typed^^} != *",$WORD,"* ]]; then
					OUTPUT="$OUTPUT $WORD"
				fi
			done
			compopt -o nospace 2>/dev/null
			COMPREPLY=( $(compgen -P "$prefix" -W "$OUTPUT" -S ',' -- "$realcur") )
			return 0
			;;
		'-s'|'--size'|'-t'|'--streams'|'-p'|'--algorithm-params')
			return 0
			;;
	esac
	case $cur in
		-*)
			local OPTS="--algorithm
				--algorithm-params
				--bytes
				--find
				--noheadings
				--output
				--output-all
				--raw
				--reset
				--size
				--streams
				--help
				--version
				--json
				--root
				--compat"
			COMPREPLY=( $(compgen -W "$OPTS" -- "$cur") )
			return 0
			;;
	esac
	# An operand: a device, or (as the first word after the global options) a verb.
	(( atfirst )) && COMPREPLY=( $(compgen -W "$VERBS" -- "$cur") )
	_zramctl_complete_devices "$cur"
	return 0
}
complete -F _zramctl_module zramctl
