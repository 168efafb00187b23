# fish completion for zramctl, the user-space zram (util-linux zramctl's options plus verbs).
# Install as ~/.config/fish/completions/zramctl.fish.  The lists are checked by tests/test_completion.py.

set -l __zramctl_verbs write read discard attr stat compact idle writeback recompress hot-add hot-remove check estimate

function __zramctl_root --description 'The image directory: --root, else $ZRAMCTL_ROOT, else the XDG state dir'
    set -l tokens (commandline -opc)
    set -l root
    set -l n (count $tokens)
    for i in (seq $n)
        switch $tokens[$i]
            case --root
                if test $i -lt $n
                    set root $tokens[(math $i + 1)]
                end
            case '--root=*'
                set root (string replace -- '--root=' '' $tokens[$i])
        end
    end
    test -n "$root"; or set root $ZRAMCTL_ROOT
    if test -z "$root"
        if string match -q -- '/*' "$XDG_STATE_HOME"
            set root $XDG_STATE_HOME/zramctl
        else
            set root $HOME/.local/state/zramctl
        end
    end
    string replace -r -- '^~' $HOME $root
end

function __zramctl_devices --description 'The devices under the root (zramN.img files)'
    set -l root (__zramctl_root)
    for f in $root/zram*.img
        test -f $f; or continue
        set -l name (string replace -r -- '\.img$' '' (basename $f))
        string match -qr -- '^zram(0|[1-9][0-9]*)$' $name; and echo $name
    end
end

function __zramctl_words --description 'The words after zramctl and its global options (--root, --compat)'
    set -l tokens (commandline -opc)
    set -e tokens[1]
    while set -q tokens[1]
        switch $tokens[1]
            case --root --compat
                set -e tokens[1]
                set -q tokens[1]; and set -e tokens[1]
            case '--root=*' '--compat=*'
                set -e tokens[1]
            case '*'
                break
        end
    end
    string join \n -- $tokens
end

function __zramctl_at_first --description 'Nothing but global options typed so far'
    test (count (__zramctl_words)) -eq 0
end

function __zramctl_verb --description 'The verb, if the first word is one'
    set -l words (__zramctl_words)
    set -q words[1]; or return 1
    contains -- $words[1] write read discard attr stat compact idle writeback recompress hot-add hot-remove check estimate; or return 1
    echo $words[1]
end

function __zramctl_no_verb
    not __zramctl_verb >/dev/null
end

function __zramctl_using --description 'The verb is one of the arguments'
    set -l verb (__zramctl_verb); or return 1
    contains -- $verb $argv
end

function __zramctl_operand --description 'The verb is $argv[1] and $argv[2] operands were typed after it'
    set -l words (__zramctl_words)
    test "$words[1]" = $argv[1]; or return 1
    set -l n 0
    set -l skip 0
    for w in $words[2..-1]
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $w
            case --offset --length --root -a --algorithm --allocator -t --threads --pid --age --page-index --page-indexes --type --max-pages --threshold --algo --priority
                set skip 1
            case '-*'
            case '*'
                set n (math $n + 1)
        end
    end
    test $n -eq $argv[2]
end

function __zramctl_columns --description 'A comma-separated column list: the names not typed yet'
    set -l token (commandline -ct)
    set token (string replace -r -- '^(--output=|-o)' '' $token)
    set -l prefix (string match -r -- '^.*,' $token)
    set -l typed (string split , -- (string replace -r -- '^\+' '' $prefix))
    for col in NAME DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED COMP-RATIO MOUNTPOINT HUGE HUGE-SINCE BD-COUNT BD-READS BD-WRITES IDLE
        contains -- $col (string upper -- $typed); or echo $prefix$col
    end
end

complete -c zramctl -f

# util-linux zramctl's options (no verb)
complete -c zramctl -n __zramctl_no_verb -s a -l algorithm -x -a 'lzo-rle lzo lz4 lz4hc zstd deflate' -d 'compression algorithm to use'
complete -c zramctl -n __zramctl_no_verb -s p -l algorithm-params -x -d 'algorithm parameters to use'
complete -c zramctl -n __zramctl_no_verb -s b -l bytes -d 'print sizes in bytes, not in human-readable form'
complete -c zramctl -n __zramctl_no_verb -s f -l find -d 'find a free device'
complete -c zramctl -n __zramctl_no_verb -s n -l noheadings -d "don't print headings"
complete -c zramctl -n __zramctl_no_verb -s o -l output -x -a '(__zramctl_columns)' -d 'columns to use for status output'
complete -c zramctl -n __zramctl_no_verb -l output-all -d 'output all columns'
complete -c zramctl -n __zramctl_no_verb -s r -l reset -d 'reset the specified zram devices'
complete -c zramctl -n __zramctl_no_verb -l raw -d 'use raw status output format'
complete -c zramctl -n __zramctl_no_verb -s s -l size -x -d 'device size'
complete -c zramctl -n __zramctl_no_verb -s t -l streams -x -d 'number of compression streams'
complete -c zramctl -n __zramctl_no_verb -l json -d 'print the status as JSON'
complete -c zramctl -n __zramctl_no_verb -l compat -x -a '3.11 6.18' -d 'kernel to behave like, with --size'
complete -c zramctl -n __zramctl_no_verb -l writeback-device -r -F -d 'backing file for writeback, with --size'
complete -c zramctl -n __zramctl_no_verb -l secondary-algorithm -x -a 'lzo-rle lzo lz4 lz4hc zstd deflate' -d 'algorithm to recompress with, with --size'
complete -c zramctl -n __zramctl_no_verb -s h -l help -d 'display this help'
complete -c zramctl -n __zramctl_no_verb -s V -l version -d 'display version'
complete -c zramctl -l root -x -a '(__fish_complete_directories)' -d 'directory that holds the device images'

# operands: the verbs (first word only) and the devices
complete -c zramctl -n __zramctl_at_first -a write -d 'store data at an offset of a device (stdin by default)'
complete -c zramctl -n __zramctl_at_first -a read -d 'copy data from a device to stdout'
complete -c zramctl -n __zramctl_at_first -a discard -d 'free the whole pages of a range'
complete -c zramctl -n __zramctl_at_first -a attr -d 'read or write a sysfs attribute'
complete -c zramctl -n __zramctl_at_first -a stat -d 'settings, counters, allocator classes, object sizes'
complete -c zramctl -n __zramctl_at_first -a compact -d 'compact the allocator memory'
complete -c zramctl -n __zramctl_at_first -a idle -d 'mark stored pages idle'
complete -c zramctl -n __zramctl_at_first -a writeback -d 'move pages to the backing file'
complete -c zramctl -n __zramctl_at_first -a recompress -d 'recompress pages with the secondary algorithms'
complete -c zramctl -n __zramctl_at_first -a hot-add -d 'add a device and print its name'
complete -c zramctl -n __zramctl_at_first -a hot-remove -d 'remove a device'
complete -c zramctl -n __zramctl_at_first -a check -d 'verify a device image'
complete -c zramctl -n __zramctl_at_first -a estimate -d 'what zram would save on data, every algorithm x allocator'
complete -c zramctl -n __zramctl_no_verb -a '(__zramctl_devices)' -d 'zram device'

# the verbs' arguments and options
for verb in write read discard attr stat compact idle writeback recompress hot-remove check
    complete -c zramctl -n "__zramctl_operand $verb 0" -a '(__zramctl_devices)' -d 'zram device'
end
complete -c zramctl -n '__zramctl_operand write 1' -F -a - -d 'input file (- for stdin)'
complete -c zramctl -n '__zramctl_operand attr 1' -a 'disksize initstate reset max_comp_streams compat comp_algorithm algorithm_params mm_stat io_stat debug_stat mem_limit mem_used_max compact idle backing_dev writeback writeback_limit writeback_limit_enable bd_stat recomp_algorithm recompress block_state num_reads num_writes invalid_io notify_free zero_pages orig_data_size compr_data_size mem_used_total' -d attribute
complete -c zramctl -n '__zramctl_using write read discard' -l offset -x -d 'where to start, in bytes'
complete -c zramctl -n '__zramctl_using read discard' -l length -x -d 'how many bytes'
complete -c zramctl -n '__zramctl_using stat' -l json -d 'print the report as JSON'
complete -c zramctl -n '__zramctl_using check' -l data -d 'also verify every stored page'
complete -c zramctl -n '__zramctl_using idle' -l all -d 'every stored page (the default)'
complete -c zramctl -n '__zramctl_using idle' -l age -x -d 'pages not accessed for more than SECONDS'
complete -c zramctl -n '__zramctl_using writeback' -l idle -d 'pages marked idle'
complete -c zramctl -n '__zramctl_using writeback' -l huge -d 'pages stored uncompressed'
complete -c zramctl -n '__zramctl_using writeback' -l huge-idle -d 'pages both huge and idle'
complete -c zramctl -n '__zramctl_using writeback' -l incompressible -d 'pages no secondary algorithm could shrink'
complete -c zramctl -n '__zramctl_using writeback' -l page-index -x -d 'the page at index N'
complete -c zramctl -n '__zramctl_using writeback' -l page-indexes -x -d 'the pages LO-HI, both included'
complete -c zramctl -n '__zramctl_using recompress' -l type -x -a 'idle huge huge_idle' -d 'only pages of this kind'
complete -c zramctl -n '__zramctl_using recompress' -l max-pages -x -d 'at most N pages'
complete -c zramctl -n '__zramctl_using recompress' -l threshold -x -d 'only pages stored in at least BYTES'
complete -c zramctl -n '__zramctl_using recompress' -l algo -x -a 'lzo-rle lzo lz4 lz4hc zstd deflate' -d 'only this secondary algorithm'
complete -c zramctl -n '__zramctl_using recompress' -l priority -x -a '1 2 3' -d 'only the secondary algorithm of priority N'
complete -c zramctl -n '__zramctl_using estimate' -F -a - -d 'input file (- for stdin)'
complete -c zramctl -n '__zramctl_using estimate' -l pid -x -a '(__fish_complete_pids)' -d 'estimate this process'"'"'s anonymous memory'
complete -c zramctl -n '__zramctl_using estimate' -l all-processes -d 'estimate every readable process'
complete -c zramctl -n '__zramctl_using estimate' -s a -l algorithm -x -a 'lzo-rle lzo lz4 lz4hc zstd deflate' -d 'comma-separated algorithms (default: all)'
complete -c zramctl -n '__zramctl_using estimate' -l allocator -x -a 'zsmalloc zsmalloc:4 zsmalloc:16 zsmalloc:3.11 zbud z3fold' -d 'comma-separated allocators (default: all)'
complete -c zramctl -n '__zramctl_using estimate' -s t -l threads -x -d 'compress on N threads'
complete -c zramctl -n '__zramctl_using estimate' -l json -d 'print the rows as JSON'
complete -c zramctl -n '__zramctl_using estimate' -s b -l bytes -d 'print sizes in bytes'
complete -c zramctl -n '__zramctl_using estimate' -l raw -d 'use the raw output format'
complete -c zramctl -n '__zramctl_verb' -s h -l help -d 'show the help of the verb'
