from parlai_conkd.leaderboard.script import main

if __name__ == '__main__':
    main()
